// Package pluginapi is the stable contract between the Celluster core and its
// out-of-process plugins: the plugin kinds, the handshake that go-plugin
// checks at start, and (in v1/) the versioned protobuf services. It imports
// only protobuf and gRPC, so both sides can depend on it.
package pluginapi

// Plugin kinds, reverse-DNS with a version, as PluginInfo.Kind carries them.
const (
	// KindTelemetry is a telemetry source: describes signals, streams samples.
	KindTelemetry = "dev.celluster.telemetry.v1"
	// KindIntent is an intent parser: turns bytes into an IntentSpec.
	KindIntent = "dev.celluster.intent.v1"
	// KindVerb implements lifecycle verbs (spawn, clone, reroute, upgrade, decay).
	KindVerb = "dev.celluster.verb.v1"
)

// Handshake values. A plugin started without the cookie in its environment
// refuses to serve (it was not launched by a Celluster node); a host that
// finds a different cookie refuses the plugin.
const (
	// MagicCookieKey is the environment variable carrying the cookie.
	MagicCookieKey = "CELLUSTER_PLUGIN_COOKIE"
	// MagicCookieValue is the cookie.
	MagicCookieValue = "c3f1b7e2-cell-uster-reflex-native-plugin"
)

// Protocol versions the plugin API has had. The host and a plugin settle on
// the highest version both speak (go-plugin's versioned plugin sets).
//
//   - 1: initial: services Plugin, Telemetry, IntentParser, Verb and Host of
//     package celluster.pluginapi.v1.
const (
	// ProtocolVersion is the newest version this tree speaks.
	ProtocolVersion = 1
)

// Names of the gRPC services in a plugin's go-plugin plugin set.
const (
	// ServicePlugin is the base service every plugin serves.
	ServicePlugin = "plugin"
	// ServiceTelemetry, ServiceIntent and ServiceVerb are served by plugins
	// of the matching kind.
	ServiceTelemetry = "telemetry"
	ServiceIntent    = "intent"
	ServiceVerb      = "verb"
)

// KindService maps a plugin kind to the service it serves beside ServicePlugin.
var KindService = map[string]string{
	KindTelemetry: ServiceTelemetry,
	KindIntent:    ServiceIntent,
	KindVerb:      ServiceVerb,
}

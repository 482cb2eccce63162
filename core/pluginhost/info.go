package pluginhost

import (
	"google.golang.org/protobuf/encoding/protojson"

	pluginapiv1 "github.com/celluster/celluster/pluginapi/v1"
)

// unmarshalInfo parses `describe` output: protojson, unknown fields ignored
// (a newer plugin may describe more).
func unmarshalInfo(b []byte, info *pluginapiv1.PluginInfo) error {
	return protojson.UnmarshalOptions{DiscardUnknown: true}.Unmarshal(b, info)
}

package pluginhost

import (
	"context"
	"errors"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/celluster/celluster/pluginapi"
	pluginapiv1 "github.com/celluster/celluster/pluginapi/v1"
)

// clientShim is the host side of one service of the plugin set: Dispense
// returns a *dispensed[T] holding the generated gRPC client, the broker and
// go-plugin's done context (canceled when the process exits).
type clientShim[T any] struct {
	plugin.NetRPCUnsupportedPlugin
	newClient func(grpc.ClientConnInterface) T
}

// dispensed is what Dispense returns on the host side.
type dispensed[T any] struct {
	client T
	broker *plugin.GRPCBroker
	done   context.Context
}

// GRPCServer implements plugin.GRPCPlugin; the host never serves plugins.
func (clientShim[T]) GRPCServer(*plugin.GRPCBroker, *grpc.Server) error {
	return errors.New("pluginhost: the host side does not serve plugin services")
}

// GRPCClient implements plugin.GRPCPlugin.
func (s clientShim[T]) GRPCClient(ctx context.Context, b *plugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return &dispensed[T]{client: s.newClient(c), broker: b, done: ctx}, nil
}

// pluginSets is the versioned plugin set the host offers: for each API
// version, the base service and one service per kind.
func pluginSets() map[int]plugin.PluginSet {
	return map[int]plugin.PluginSet{
		pluginapi.ProtocolVersion: {
			pluginapi.ServicePlugin:    clientShim[pluginapiv1.PluginClient]{newClient: pluginapiv1.NewPluginClient},
			pluginapi.ServiceTelemetry: clientShim[pluginapiv1.TelemetryClient]{newClient: pluginapiv1.NewTelemetryClient},
			pluginapi.ServiceIntent:    clientShim[pluginapiv1.IntentParserClient]{newClient: pluginapiv1.NewIntentParserClient},
			pluginapi.ServiceVerb:      clientShim[pluginapiv1.VerbClient]{newClient: pluginapiv1.NewVerbClient},
		},
	}
}

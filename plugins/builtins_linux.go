package plugins

import (
	"github.com/celluster/celluster/plugins/kernel"
	"github.com/celluster/celluster/sdk/plugin"
)

func init() {
	builtins["kernel"] = func() { plugin.Serve(kernel.Info, kernel.New()) }
}

module github.com/celluster/celluster/pluginapi/cellabi

go 1.24

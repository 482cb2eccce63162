module github.com/celluster/celluster/sdk/cell

go 1.25

require github.com/celluster/celluster/pluginapi/cellabi v0.1.0

replace github.com/celluster/celluster/pluginapi/cellabi => ../../pluginapi/cellabi

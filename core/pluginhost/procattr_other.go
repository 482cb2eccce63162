//go:build !linux

package pluginhost

import "syscall"

// sysProcAttr: outside Linux there is no parent-death signal; Close (and
// the plugin noticing its host connection is gone) must end plugins.
func sysProcAttr() *syscall.SysProcAttr { return nil }

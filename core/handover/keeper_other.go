//go:build !linux

package handover

import (
	"context"
	"errors"
	"time"
)

var errUnsupported = errors.New("handover: passing sockets between node processes is implemented on Linux only")

// Hold is implemented on Linux only.
func Hold(context.Context, string, []string, int, []Held) (int, error) { return 0, errUnsupported }

// Keep is implemented on Linux only.
func Keep(string, time.Duration) error { return errUnsupported }

// Take is implemented on Linux only: elsewhere there is never a keeper.
func Take(context.Context, string) (*Taken, error) { return nil, ErrNoKeeper }

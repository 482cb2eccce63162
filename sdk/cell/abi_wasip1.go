//go:build wasip1

package cell

//lint:file-ignore U1000 the host calls celAlloc and celHandle through go:wasmexport, which staticcheck does not see.

import (
	"time"
	"unsafe"
)

// The cel host module. A string parameter is passed as (ptr i32, len i32).

//go:wasmimport cel log
func celLog(level int32, msg string)

//go:wasmimport cel now
func celNow() int64

func hostLog(level Level, msg string) { celLog(int32(level), msg) }

//go:wasmimport cel call
func celCall(target string, req unsafe.Pointer, reqLen uint32) uint32

//go:wasmimport cel call_result
func celCallResult(dst unsafe.Pointer)

// hostCall makes a cel.call: the host answers the response's length, then
// copies it into a buffer of that size.
func hostCall(target string, req []byte) ([]byte, error) {
	n := celCall(target, unsafe.Pointer(unsafe.SliceData(req)), uint32(len(req)))
	out := make([]byte, max(n, 1))
	celCallResult(unsafe.Pointer(unsafe.SliceData(out)))
	return out[:n], nil
}

func hostNow() time.Time { return time.Unix(0, celNow()) }

//go:wasmimport cel signal
func celSignal(name string, value float64) int32

func hostSignal(name string, value float64) int32 { return celSignal(name, value) }

// The buffers shared with the host. Referencing them from package variables
// keeps the garbage collector from freeing them while the host uses them
// (the Go collector does not move objects, so their addresses are stable).
var (
	// reqBuf is the buffer cel_alloc last returned. It stays valid until
	// the next cel_alloc.
	reqBuf []byte
	// respBuf holds the last response envelope. It stays valid until the
	// next cel_alloc or cel_handle.
	respBuf []byte
)

// keepBytes is the largest buffer capacity kept for reuse between
// requests; larger buffers are dropped so that one big request does not pin
// its memory in the Go heap forever (linear memory itself never shrinks).
const keepBytes = 1 << 20

// celAlloc is the cel_alloc export: it returns a buffer of size bytes for
// the host to write the request envelope into.
//
// celABIVersion11 is never called: its export, cel_abi_version_1_1, tells
// the node that this cell reads ABI v1.1 request envelopes (with the
// request metadata).
//
//go:wasmexport cel_abi_version_1_1
func celABIVersion11() {}

//go:wasmexport cel_alloc
func celAlloc(size uint32) unsafe.Pointer {
	if cap(respBuf) > keepBytes {
		respBuf = nil
	}
	if uint64(cap(reqBuf)) < uint64(size) || cap(reqBuf) > keepBytes {
		reqBuf = make([]byte, max(size, 64))
	}
	reqBuf = reqBuf[:size]
	return unsafe.Pointer(unsafe.SliceData(reqBuf[:cap(reqBuf)]))
}

// celHandle is the cel_handle export: it serves the request envelope the
// host wrote at ptr (which must be the buffer cel_alloc returned) and
// returns ptr<<32 | len of the response envelope.
//
//go:wasmexport cel_handle
func celHandle(ptr unsafe.Pointer, size uint32) uint64 {
	var req []byte
	if cap(reqBuf) > 0 && ptr == unsafe.Pointer(unsafe.SliceData(reqBuf[:cap(reqBuf)])) && uint64(size) <= uint64(cap(reqBuf)) {
		req = reqBuf[:size:size]
	}
	if req == nil {
		Log(LevelError, "cel_handle: the request is not in the buffer cel_alloc returned")
		respBuf = appendError(respBuf[:0], "cel_handle: the request is not in the buffer cel_alloc returned")
	} else {
		respBuf = ServeEnvelope(respBuf[:0], nil, req)
	}
	p := uint64(uintptr(unsafe.Pointer(unsafe.SliceData(respBuf))))
	return p<<32 | uint64(len(respBuf))
}

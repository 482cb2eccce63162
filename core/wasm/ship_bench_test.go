package wasm

import (
	"bufio"
	"context"
	"io"
	"math/rand/v2"
	"net"
	"testing"
	"time"

	"github.com/celluster/celluster/core/wasm/snapshot"
)

// BenchmarkShipState measures shipping a replica's state to another node,
// as a clone onto a peer of a cell that keeps state does, over a TCP
// connection on 127.0.0.1 to a second engine (the peer): capturing the
// state, encoding it, sending it, and on the peer decoding (verifying) it
// and starting a replica from it, which is closed. The replica holds 64 MiB
// of memory of which 1 MiB (16 scattered wasm pages) was written; the rest
// is as the module left it. path=diff is the node's way (EncodeSnapshot:
// only pages that differ from the module's data, zstd, checksummed);
// path=raw, the peer in the same run, sends the whole memory as it is and
// the peer copies it. KiB/ship is what crossed the connection.
//
// Aim: path=diff at most 2 MiB and 50 ms.
func BenchmarkShipState(b *testing.B) {
	const memPages, dirtyPages = 1024, 16
	ctx := context.Background()
	cfg := InstanceConfig{Cell: "tiny", Logger: benchLog}
	src := testdata(b, "tiny.wasm")
	m := benchCompile(b, benchEngine(b, Config{}), src)
	peer := benchCompile(b, benchEngine(b, Config{}), src)
	r, err := m.NewReactor(ctx, cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close(ctx)
	if _, ok := r.mem.Grow(memPages - r.mem.Size()/PageSize); !ok {
		b.Fatal("growing memory failed")
	}
	// Random bytes: compression must not make the dirty pages vanish.
	rng := rand.New(rand.NewPCG(1, 2))
	page := make([]byte, PageSize)
	for i := range dirtyPages {
		for j := range page {
			page[j] = byte(rng.Uint32())
		}
		r.mem.Write(uint32((5+i*(memPages/dirtyPages))*PageSize), page)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		n   int64
		err error
	}
	for _, path := range []string{"diff", "raw"} {
		b.Run("path="+path, func(b *testing.B) {
			var sent int64
			for b.Loop() {
				done := make(chan result, 1)
				go func() {
					c, err := ln.Accept()
					if err != nil {
						done <- result{err: err}
						return
					}
					defer c.Close()
					cr := &countingReader{r: bufio.NewReaderSize(c, 1<<20)}
					var s *Snapshot
					if path == "diff" {
						s, _, err = peer.DecodeSnapshot(cr, 0)
					} else {
						mem := make([]byte, memPages*PageSize)
						if _, err = io.ReadFull(cr, mem); err == nil {
							var img *image
							if img, err = newImage("raw", mem); err == nil {
								s = &Snapshot{module: peer.SHA256, img: img, globals: make([]uint64, len(peer.globals)), taken: time.Now()}
							}
						}
					}
					if err == nil {
						var pr *Reactor
						if pr, err = peer.NewReactorFrom(ctx, cfg, s); err == nil {
							pr.Close(ctx)
						}
					}
					done <- result{n: cr.n, err: err}
				}()
				c, err := net.Dial("tcp", ln.Addr().String())
				if err != nil {
					b.Fatal(err)
				}
				s, err := r.Snapshot()
				if err != nil {
					b.Fatal(err)
				}
				w := bufio.NewWriterSize(c, 1<<20)
				if path == "diff" {
					_, err = m.EncodeSnapshot(w, s, snapshot.KindState)
				} else {
					mem, release, verr := s.img.view()
					if verr != nil {
						b.Fatal(verr)
					}
					_, err = w.Write(mem)
					release()
				}
				if err == nil {
					err = w.Flush()
				}
				if err != nil {
					b.Fatal(err)
				}
				c.(*net.TCPConn).CloseWrite()
				res := <-done
				c.Close()
				if res.err != nil {
					b.Fatal(res.err)
				}
				sent = res.n
			}
			b.ReportMetric(float64(sent)/1024, "KiB/ship")
			b.ReportMetric(perOp(b, time.Millisecond), "ms/ship")
		})
	}
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

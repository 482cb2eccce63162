//go:build !race

package wasm

// raceDetector reports whether the tests run under the race detector.
const raceDetector = false

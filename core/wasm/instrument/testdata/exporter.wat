;; Provides the "env" module that imported.wasm needs: a memory without a
;; maximum and a constant global. Regenerate: wat2wasm exporter.wat -o exporter.wasm
(module
  (memory (export "mem") 1)
  (global (export "base") i32 (i32.const 1000))
)

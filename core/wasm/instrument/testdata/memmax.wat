;; A memory with a maximum, for MaxMemoryPages to lower.
;; Regenerate: wat2wasm memmax.wat -o memmax.wasm
(module
  (memory (export "memory") 2 1000)
  (func (export "grow") (param i32) (result i32)
    (memory.grow (local.get 0)))
)

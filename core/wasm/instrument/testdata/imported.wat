;; Imports its memory and a global, so Instrument must leave the memory alone
;; and give the interrupt global index 2 (after the imported and the defined
;; global). Regenerate: wat2wasm imported.wat -o imported.wasm
(module
  (import "env" "mem" (memory 1))
  (import "env" "base" (global $base i32))
  (global $step (mut i32) (i32.const 3))
  (func (export "grow") (param i32) (result i32)
    (memory.grow (local.get 0)))
  (func (export "count") (param $n i32) (result i32) (local $i i32) (local $s i32)
    (loop $l
      (local.set $s (i32.add (local.get $s) (global.get $step)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (local.get $n))))
    (i32.add (local.get $s) (global.get $base)))
)

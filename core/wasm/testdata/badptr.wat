;; A reactor that returns a response pointer outside its memory, and logs with
;; an out-of-bounds pointer first.
(module
  (import "cel" "log" (func $log (param i32 i32 i32)))
  (memory (export "memory") 1)
  (func (export "cel_alloc") (param i32) (result i32) i32.const 1024)
  (func (export "cel_handle") (param i32 i32) (result i64)
    (call $log (i32.const 1) (i32.const 65530) (i32.const 100))
    i64.const 0x0001000000000010))

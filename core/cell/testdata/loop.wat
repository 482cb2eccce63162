;; A reactor whose handler never returns.
(module
  (memory (export "memory") 1)
  (global $sink (mut i32) (i32.const 0))
  (func (export "cel_alloc") (param i32) (result i32) i32.const 1024)
  (func (export "cel_handle") (param i32 i32) (result i64)
    (loop $l
      (global.set $sink (i32.add (global.get $sink) (i32.const 1)))
      (br $l))
    i64.const 0))

;; A reactor whose handler grows memory by 16 pages (1 MiB) per request and
;; traps (unreachable) when memory.grow fails, as a guest allocator would.
(module
  (memory (export "memory") 1)
  (data (i32.const 0) "\01\00\c8\00\00\00\00\00\02\00\00\00ok")
  (func (export "cel_alloc") (param i32) (result i32) i32.const 1024)
  (func (export "cel_handle") (param i32 i32) (result i64)
    (if (i32.eq (memory.grow (i32.const 16)) (i32.const -1)) (then unreachable))
    i64.const 14))

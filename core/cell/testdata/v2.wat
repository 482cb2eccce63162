;; A minimal reactor answering every request 200 with body "v2".
(module
  (memory (export "memory") 1)
  (data (i32.const 0) "\01\00\c8\00\00\00\00\00\02\00\00\00v2")
  (func (export "cel_alloc") (param i32) (result i32) i32.const 1024)
  (func (export "cel_handle") (param i32 i32) (result i64) i64.const 14))

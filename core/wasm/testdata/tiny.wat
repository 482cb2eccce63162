;; A minimal reactor: answers every request 200 "ok" (a precomputed response
;; envelope), logs through cel.log when the request is longer than 1000 bytes.
(module
  (import "cel" "log" (func $log (param i32 i32 i32)))
  (memory (export "memory") 1)
  ;; response envelope: version 1, flags 0, status 200, 0 headers, body "ok"
  (data (i32.const 0) "\01\00\c8\00\00\00\00\00\02\00\00\00ok")
  (data (i32.const 16) "big request")
  (func (export "cel_alloc") (param $n i32) (result i32) i32.const 1024)
  (func (export "cel_handle") (param $p i32) (param $n i32) (result i64)
    (if (i32.gt_u (local.get $n) (i32.const 1000))
      (then (call $log (i32.const 1) (i32.const 16) (i32.const 11))))
    i64.const 14))

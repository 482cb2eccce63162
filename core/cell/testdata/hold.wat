;; A reactor that counts the requests its instance has answered. A request
;; whose envelope contains "spin" (e.g. the path /hold/spin) logs "spinning"
;; (cel.log, level info) and never returns: it holds its instance until the
;; request is canceled or times out. Any other request answers 200 with the
;; instance's count as six decimal digits, so requests answered by one
;; instance get 000001, 000002, ...
(module
  (import "cel" "log" (func $log (param i32 i32 i32)))
  (memory (export "memory") 1)
  (global $n (mut i32) (i32.const 0))
  (global $sink (mut i32) (i32.const 0))
  ;; response envelope: version 1, status 200, no headers, body of 6 bytes
  (data (i32.const 0) "\01\00\c8\00\00\00\00\00\06\00\00\00")
  (data (i32.const 32) "spinning")
  (func (export "cel_alloc") (param i32) (result i32) i32.const 1024)
  (func (export "cel_handle") (param $ptr i32) (param $len i32) (result i64)
    (local $i i32) (local $end i32) (local $v i32) (local $d i32)
    ;; look for "spin" (0x6e697073 little-endian) in the request
    (local.set $i (local.get $ptr))
    (local.set $end (i32.sub (i32.add (local.get $ptr) (local.get $len)) (i32.const 4)))
    (block $scanned
      (loop $scan
        (br_if $scanned (i32.gt_s (local.get $i) (local.get $end)))
        (if (i32.eq (i32.load (local.get $i)) (i32.const 0x6e697073))
          (then
            (call $log (i32.const 1) (i32.const 32) (i32.const 8))
            (loop $spin
              (global.set $sink (i32.add (global.get $sink) (i32.const 1)))
              (br $spin))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $scan)))
    ;; count and write the count as six digits at 12..17
    (global.set $n (i32.add (global.get $n) (i32.const 1)))
    (local.set $v (global.get $n))
    (local.set $d (i32.const 17))
    (loop $digits
      (i32.store8 (local.get $d) (i32.add (i32.const 48) (i32.rem_u (local.get $v) (i32.const 10))))
      (local.set $v (i32.div_u (local.get $v) (i32.const 10)))
      (local.set $d (i32.sub (local.get $d) (i32.const 1)))
      (br_if $digits (i32.ge_s (local.get $d) (i32.const 12))))
    (i64.const 18)))

;; Post-2.0 features wazero supports behind experimental flags: tail calls
;; and threads. Regenerate:
;;   wat2wasm --enable-tail-call --enable-threads features.wat -o features.wasm
(module
  (memory (export "memory") 1 1 shared)

  ;; Runs forever without a loop: only the function entry check can stop it.
  (func $tail (export "tail") (param i32) (result i32)
    (return_call $tail (i32.add (local.get 0) (i32.const 1))))

  ;; Counts down with tail calls, returns the number of calls.
  (func $countdown (export "countdown") (param $n i32) (param $acc i32) (result i32)
    (if (result i32) (i32.eqz (local.get $n))
      (then (local.get $acc))
      (else (return_call $countdown
        (i32.sub (local.get $n) (i32.const 1))
        (i32.add (local.get $acc) (i32.const 1))))))

  ;; Atomics in a loop.
  (func (export "atomics") (param $n i32) (result i32) (local $i i32)
    (loop $l
      (drop (i32.atomic.rmw.add offset=8 (i32.const 0) (local.get $i)))
      (atomic.fence)
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (local.get $n))))
    (i32.add
      (i32.atomic.load offset=8 (i32.const 0))
      (memory.atomic.notify (i32.const 0) (i32.const 0))))
)

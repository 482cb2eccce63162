;; Small module exercising loops, recursion and the WebAssembly 2.0
;; instruction set. Regenerate basic.wasm with: wat2wasm basic.wat -o basic.wasm
(module
  (type $unary (func (param i32) (result i32)))
  (memory (export "memory") 1)
  (global $g (mut i32) (i32.const 7))
  (global $k i64 (i64.const 42))
  (table $t 4 funcref)
  (elem (table $t) (i32.const 0) func $double $triple)
  (data $hello "hello, world")

  ;; Spins forever; the body starts with a loop, so only the loop header
  ;; check can stop it.
  (func (export "spin")
    (loop $l (br $l)))

  ;; Spins forever in a loop that is not the first instruction.
  (func (export "spin2") (result i32) (local $i i32)
    (local.set $i (i32.const 1))
    (loop $l
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $l))
    (local.get $i))

  ;; Recurses until the stack overflows; no loop anywhere.
  (func $rec (export "recurse") (param i32) (result i32)
    (call $rec (i32.add (local.get 0) (i32.const 1))))

  ;; sum(n) = 0 + 1 + ... + n
  (func (export "sum") (param $n i32) (result i64) (local $i i32) (local $s i64)
    (block $done
      (loop $l
        (br_if $done (i32.gt_u (local.get $i) (local.get $n)))
        (local.set $s (i64.add (local.get $s) (i64.extend_i32_u (local.get $i))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $l)))
    (local.get $s))

  ;; Nested loops, the outer one carrying a value as a loop parameter
  ;; (multi-value block type with a type index).
  (func (export "nested") (param $n i32) (result i32) (local $i i32) (local $j i32)
    (i32.const 0)
    (loop $outer (param i32) (result i32)
      (local.set $j (i32.const 0))
      (loop $inner (param i32) (result i32)
        (i32.add (local.get $i) (local.get $j))
        (i32.add)
        (local.set $j (i32.add (local.get $j) (i32.const 1)))
        (br_if $inner (i32.lt_u (local.get $j) (local.get $n))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $outer (i32.lt_u (local.get $i) (local.get $n)))))

  ;; Multi-value: a block returning two values, and a function returning two.
  (func $divmod (param i32 i32) (result i32 i32)
    (i32.div_u (local.get 0) (local.get 1))
    (i32.rem_u (local.get 0) (local.get 1)))
  (func (export "multi") (param i32) (result i32)
    (local.get 0)
    (block (param i32) (result i32 i32)
      (i32.const 7)
      (call $divmod))
    (i32.const 1000)
    (i32.mul)
    (i32.add))

  (func (export "brtable") (param i32) (result i32)
    (block $c
      (block $b
        (block $a
          (br_table $a $b $c (local.get 0)))
        (return (i32.const 100)))
      (return (i32.const 200)))
    (i32.const 300))

  ;; SIMD: v128.const (its bytes include 0x03, the loop opcode), shuffle,
  ;; lane ops, loads and stores, and a loop over vectors.
  (func (export "simd") (param $n i32) (result i32) (local $v v128) (local $i i32)
    (local.set $v (v128.const i32x4 3 3 3 3))
    (loop $l
      (local.set $v (i32x4.add (local.get $v) (i32x4.splat (local.get $i))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (local.get $n))))
    (v128.store offset=16 (i32.const 0) (local.get $v))
    (local.set $v (v128.load offset=16 (i32.const 0)))
    (local.set $v (i8x16.shuffle 3 2 1 0 7 6 5 4 11 10 9 8 15 14 13 12 (local.get $v) (local.get $v)))
    (local.set $v (i32x4.replace_lane 1 (local.get $v) (i32.const 3)))
    (local.set $v (v128.load32_lane 2 (i32.const 16) (local.get $v)))
    (i32.add
      (i32.add (i32x4.extract_lane 0 (local.get $v)) (i32x4.extract_lane 1 (local.get $v)))
      (i32.add (i32x4.extract_lane 2 (local.get $v)) (i32x4.extract_lane 3 (local.get $v)))))

  ;; Bulk memory: fill, copy, init from a passive segment, then checksum the
  ;; bytes in a loop.
  (func (export "bulk") (param $n i32) (result i32) (local $i i32) (local $s i32)
    (memory.fill (i32.const 100) (i32.const 3) (local.get $n))
    (memory.copy (i32.const 200) (i32.const 100) (local.get $n))
    (memory.init $hello (i32.const 300) (i32.const 0) (i32.const 12))
    (data.drop $hello)
    (block $done
      (loop $l
        (br_if $done (i32.ge_u (local.get $i) (i32.const 512)))
        (local.set $s (i32.add
          (i32.mul (local.get $s) (i32.const 31))
          (i32.load8_u offset=0 (local.get $i))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $l)))
    (local.get $s))

  (func $double (param i32) (result i32) (i32.mul (local.get 0) (i32.const 2)))
  (func $triple (param i32) (result i32) (i32.mul (local.get 0) (i32.const 3)))
  (func (export "indirect") (param $f i32) (param $x i32) (result i32)
    (call_indirect (type $unary) (local.get $x) (local.get $f)))

  ;; Reference types: ref.null, ref.is_null, ref.func, table.get/set/size/grow,
  ;; typed select.
  (func (export "refs") (result i32)
    (table.set $t (i32.const 2) (ref.func $triple))
    (i32.add
      (i32.add
        (ref.is_null (table.get $t (i32.const 3)))
        (ref.is_null (select (result funcref) (ref.null func) (table.get $t (i32.const 2)) (i32.const 0))))
      (i32.add (table.size $t) (table.grow $t (ref.null func) (i32.const 1)))))

  ;; Saturating truncation and sign extension.
  (func (export "convert") (param f64) (result i32)
    (i32.add
      (i32.trunc_sat_f64_s (local.get 0))
      (i32.extend8_s (i32.const 0x83))))

  (func (export "grow") (param i32) (result i32)
    (memory.grow (local.get 0)))

  (func (export "get") (result i64)
    (i64.add (i64.extend_i32_s (global.get $g)) (global.get $k)))
)

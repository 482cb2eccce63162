;; No global and no export section, but a start section: Instrument must
;; create both sections in the right place (before the start section).
;; Regenerate: wat2wasm bare.wat -o bare.wasm
(module
  (func $init)
  (func $spin (loop $l (br $l)))
  (start $init)
)

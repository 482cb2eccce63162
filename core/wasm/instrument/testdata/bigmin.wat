;; A memory whose minimum (300 pages) is above the cap the tests use (256).
;; Regenerate: wat2wasm bigmin.wat -o bigmin.wasm
(module
  (memory 300)
)

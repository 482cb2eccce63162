(module
  (import "env" "foo" (func $foo))
  (import "cel" "kv_get" (func $kv))
  (func (export "_start")))

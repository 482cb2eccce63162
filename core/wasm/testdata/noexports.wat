(module (func $f))

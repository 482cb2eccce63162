// Command gomod is a small Go program that the instrument tests compile to
// wasip1/wasm: it loops, allocates, uses maps, goroutines and channels, and
// prints the results, so a changed result or a broken module shows up in its
// output. Given the argument "spin" it loops forever instead; given
// "bench", it only does a heavier computation, for benchmarks.
package main

import (
	"crypto/sha256"
	"fmt"
	"os"
	"sort"
	"strings"
)

func primes(n int) []int {
	sieve := make([]bool, n+1)
	var ps []int
	for i := 2; i <= n; i++ {
		if sieve[i] {
			continue
		}
		ps = append(ps, i)
		for j := i * i; j <= n; j += i {
			sieve[j] = true
		}
	}
	return ps
}

func fib(n int) int {
	if n < 2 {
		return n
	}
	return fib(n-1) + fib(n-2)
}

var sink int

func main() {
	if len(os.Args) > 1 && os.Args[1] == "spin" {
		fmt.Println("spinning")
		for i := 0; ; i++ {
			sink += i
		}
	}

	if len(os.Args) > 1 && os.Args[1] == "bench" {
		fmt.Println(len(primes(3000000)), fib(30))
		return
	}

	ps := primes(100000)
	sum := 0
	for _, p := range ps {
		sum += p
	}
	fmt.Printf("primes below 100000: %d, sum %d\n", len(ps), sum)
	fmt.Printf("fib(25) = %d\n", fib(25))

	words := map[string]int{}
	for _, w := range strings.Fields(strings.Repeat("the quick brown fox jumps over the lazy dog ", 50)) {
		words[w]++
	}
	keys := make([]string, 0, len(words))
	for k := range words {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Printf("%s=%d ", k, words[k])
	}
	fmt.Println()

	results := make(chan int)
	for g := 0; g < 4; g++ {
		go func(g int) {
			s := 0
			for i := 0; i < 100000; i++ {
				s += i % (g + 2)
			}
			results <- s
		}(g)
	}
	total := 0
	for g := 0; g < 4; g++ {
		total += <-results
	}
	fmt.Printf("goroutines: %d\n", total)

	h := sha256.Sum256([]byte(strings.Repeat("celluster", 1000)))
	fmt.Printf("sha256: %x\n", h)
}

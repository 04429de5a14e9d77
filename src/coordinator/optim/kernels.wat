;; The coordinator's per-element passes (src/coordinator/optim/kernels.ts), in WebAssembly SIMD.
;;
;; Bit-identical to the JavaScript they replace (average.ts, sgd.ts):
;;   mean:  f32( (((f64 p0 + f64 p1) + f64 p2) + …) / count ), a sum in float64 in rank order, rounded once;
;;          count 1 is a plain copy.
;;   sgd:   v ← f32(f32(m·v) − f32(lr·g));  w ← f32(w + v)  — float32 operations, as Math.fround gives.
;; All pointers are byte offsets into the imported memory; `parts` points at `count` i32 pointers.
;; The memory is shared: helper threads (kernel-thread.mjs) and the coordinator's thread take chunks of
;; one update from a common ticket (meanSgdShared), so a thread that wakes late takes fewer of them.
(module
  (import "env" "memory" (memory 1 65536 shared))

  ;; The mean of the parts' four float32 lanes at byte offset `at`.
  (func $mean4 (param $parts i32) (param $count i32) (param $at i32) (result v128)
    (local $x v128) (local $lo v128) (local $hi v128) (local $k i32) (local $c v128)
    (local.set $x (v128.load (i32.add (i32.load (local.get $parts)) (local.get $at))))
    (if (i32.eq (local.get $count) (i32.const 1)) (then (return (local.get $x))))
    (local.set $lo (f64x2.promote_low_f32x4 (local.get $x)))
    (local.set $hi (f64x2.promote_low_f32x4
      (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get $x) (local.get $x))))
    (local.set $k (i32.const 1))
    (loop $next
      (local.set $x (v128.load (i32.add
        (i32.load (i32.add (local.get $parts) (i32.shl (local.get $k) (i32.const 2))))
        (local.get $at))))
      (local.set $lo (f64x2.add (local.get $lo) (f64x2.promote_low_f32x4 (local.get $x))))
      (local.set $hi (f64x2.add (local.get $hi) (f64x2.promote_low_f32x4
        (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get $x) (local.get $x)))))
      (local.set $k (i32.add (local.get $k) (i32.const 1)))
      (br_if $next (i32.lt_u (local.get $k) (local.get $count))))
    (local.set $c (f64x2.splat (f64.convert_i32_u (local.get $count))))
    (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23
      (f32x4.demote_f64x2_zero (f64x2.div (local.get $lo) (local.get $c)))
      (f32x4.demote_f64x2_zero (f64x2.div (local.get $hi) (local.get $c)))))

  ;; The same for one float32 at byte offset `at` (the tail of an array whose length is not a multiple of 4).
  (func $mean1 (param $parts i32) (param $count i32) (param $at i32) (result f32)
    (local $s f64) (local $k i32)
    (if (i32.eq (local.get $count) (i32.const 1))
      (then (return (f32.load (i32.add (i32.load (local.get $parts)) (local.get $at))))))
    (local.set $s (f64.promote_f32 (f32.load (i32.add (i32.load (local.get $parts)) (local.get $at)))))
    (local.set $k (i32.const 1))
    (loop $next
      (local.set $s (f64.add (local.get $s) (f64.promote_f32 (f32.load (i32.add
        (i32.load (i32.add (local.get $parts) (i32.shl (local.get $k) (i32.const 2))))
        (local.get $at))))))
      (local.set $k (i32.add (local.get $k) (i32.const 1)))
      (br_if $next (i32.lt_u (local.get $k) (local.get $count))))
    (f32.demote_f64 (f64.div (local.get $s) (f64.convert_i32_u (local.get $count)))))

  ;; out[i] = mean of parts[·][i], for i < n.
  (func (export "mean") (param $out i32) (param $parts i32) (param $count i32) (param $n i32)
    (local $at i32) (local $end4 i32) (local $end i32)
    (local.set $end (i32.shl (local.get $n) (i32.const 2)))
    (local.set $end4 (i32.and (local.get $end) (i32.const -16)))
    (block $done4 (loop $vec
      (br_if $done4 (i32.ge_u (local.get $at) (local.get $end4)))
      (v128.store (i32.add (local.get $out) (local.get $at)) (call $mean4 (local.get $parts) (local.get $count) (local.get $at)))
      (local.set $at (i32.add (local.get $at) (i32.const 16)))
      (br $vec)))
    (block $done (loop $one
      (br_if $done (i32.ge_u (local.get $at) (local.get $end)))
      (f32.store (i32.add (local.get $out) (local.get $at)) (call $mean1 (local.get $parts) (local.get $count) (local.get $at)))
      (local.set $at (i32.add (local.get $at) (i32.const 4)))
      (br $one))))

  ;; Keras momentum SGD on the mean of the parts, for from ≤ i < to (from a multiple of 4); returns 1 if
  ;; every new velocity is finite.
  ;; The mean is $mean4's arithmetic written out in the loop: a call per four values was ~40 % of the pass
  ;; at one replica (V8 does not inline WebAssembly calls). A power-of-two count divides by multiplying
  ;; with its reciprocal, which is exact (a power of two scales without rounding, and no sum of float32
  ;; values comes near float64's subnormals or overflow): the same bits, without f64x2.div's latency.
  (func $meanSgd (export "meanSgd") (param $w i32) (param $v i32) (param $parts i32) (param $count i32)
      (param $from i32) (param $to i32) (param $lr f32) (param $m f32) (result i32)
    (local $at i32) (local $end4 i32) (local $end i32)
    (local $lr4 v128) (local $m4 v128) (local $vi v128) (local $bad v128) (local $zero v128)
    (local $s f32) (local $bad1 f32)
    (local $p0 i32) (local $g v128) (local $x v128) (local $lo v128) (local $hi v128) (local $k i32)
    (local $c v128) (local $inv v128) (local $pow2 i32) (local $many i32)
    (local.set $lr4 (f32x4.splat (local.get $lr)))
    (local.set $m4 (f32x4.splat (local.get $m)))
    (local.set $at (i32.shl (local.get $from) (i32.const 2)))
    (local.set $end (i32.shl (local.get $to) (i32.const 2)))
    (local.set $end4 (i32.add (local.get $at)
      (i32.and (i32.sub (local.get $end) (local.get $at)) (i32.const -16))))
    (local.set $p0 (i32.load (local.get $parts)))
    (local.set $many (i32.gt_u (local.get $count) (i32.const 1)))
    (local.set $c (f64x2.splat (f64.convert_i32_u (local.get $count))))
    (local.set $inv (f64x2.splat (f64.div (f64.const 1) (f64.convert_i32_u (local.get $count)))))
    (local.set $pow2 (i32.eqz (i32.and (local.get $count) (i32.sub (local.get $count) (i32.const 1)))))
    (block $done4 (loop $vec
      (br_if $done4 (i32.ge_u (local.get $at) (local.get $end4)))
      (local.set $g (v128.load (i32.add (local.get $p0) (local.get $at))))
      (if (local.get $many) (then
        (local.set $lo (f64x2.promote_low_f32x4 (local.get $g)))
        (local.set $hi (f64x2.promote_low_f32x4
          (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get $g) (local.get $g))))
        (local.set $k (i32.const 1))
        (loop $next
          (local.set $x (v128.load (i32.add
            (i32.load (i32.add (local.get $parts) (i32.shl (local.get $k) (i32.const 2))))
            (local.get $at))))
          (local.set $lo (f64x2.add (local.get $lo) (f64x2.promote_low_f32x4 (local.get $x))))
          (local.set $hi (f64x2.add (local.get $hi) (f64x2.promote_low_f32x4
            (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get $x) (local.get $x)))))
          (local.set $k (i32.add (local.get $k) (i32.const 1)))
          (br_if $next (i32.lt_u (local.get $k) (local.get $count))))
        (if (local.get $pow2)
          (then
            (local.set $lo (f64x2.mul (local.get $lo) (local.get $inv)))
            (local.set $hi (f64x2.mul (local.get $hi) (local.get $inv))))
          (else
            (local.set $lo (f64x2.div (local.get $lo) (local.get $c)))
            (local.set $hi (f64x2.div (local.get $hi) (local.get $c)))))
        (local.set $g (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23
          (f32x4.demote_f64x2_zero (local.get $lo))
          (f32x4.demote_f64x2_zero (local.get $hi))))))
      (local.set $vi (f32x4.sub
        (f32x4.mul (local.get $m4) (v128.load (i32.add (local.get $v) (local.get $at))))
        (f32x4.mul (local.get $lr4) (local.get $g))))
      (v128.store (i32.add (local.get $v) (local.get $at)) (local.get $vi))
      (v128.store (i32.add (local.get $w) (local.get $at))
        (f32x4.add (v128.load (i32.add (local.get $w) (local.get $at))) (local.get $vi)))
      ;; x·0 is NaN exactly when x is NaN or infinite, and NaN stays in a sum.
      (local.set $bad (f32x4.add (local.get $bad) (f32x4.mul (local.get $vi) (local.get $zero))))
      (local.set $at (i32.add (local.get $at) (i32.const 16)))
      (br $vec)))
    (block $done (loop $one
      (br_if $done (i32.ge_u (local.get $at) (local.get $end)))
      (local.set $s (f32.sub
        (f32.mul (local.get $m) (f32.load (i32.add (local.get $v) (local.get $at))))
        (f32.mul (local.get $lr) (call $mean1 (local.get $parts) (local.get $count) (local.get $at)))))
      (f32.store (i32.add (local.get $v) (local.get $at)) (local.get $s))
      (f32.store (i32.add (local.get $w) (local.get $at))
        (f32.add (f32.load (i32.add (local.get $w) (local.get $at))) (local.get $s)))
      (local.set $bad1 (f32.add (local.get $bad1) (f32.mul (local.get $s) (f32.const 0))))
      (local.set $at (i32.add (local.get $at) (i32.const 4)))
      (br $one)))
    (i32.eqz (i32.or
      (v128.any_true (f32x4.ne (local.get $bad) (local.get $bad)))
      (f32.ne (local.get $bad1) (local.get $bad1)))))
  ;; One update shared by threads: while the ticket at ctl+4 is of generation `gen`, take its next chunk
  ;; and run $meanSgd on it. The control block (kernels.ts CONTROL, byte offsets from ctl): 4 ticket
  ;; (gen << 8 | next chunk), 8 chunks done, 12 bad (set when a chunk's velocity is not finite), 16 threads
  ;; that took a chunk (a bit each), 20 w, 24 v, 28 parts, 32 count, 36 n, 40 chunk length, 44 chunks,
  ;; 48 lr, 52 m. `bit` is this thread's bit; returns how many chunks it ran. The last chunk to finish
  ;; wakes the coordinator's thread, which waits for ctl+8 to reach the count. The coordinator clears the
  ;; ticket before it writes the next update's arguments: a thread still holding this generation's ticket
  ;; then fails its compare-and-swap, whatever arguments it read meanwhile.
  (func (export "meanSgdShared") (param $ctl i32) (param $gen i32) (param $bit i32) (result i32)
    (local $t i32) (local $i i32) (local $from i32) (local $mine i32) (local $chunks i32) (local $len i32)
    (block $out (loop $claim
      (local.set $t (i32.atomic.load offset=4 (local.get $ctl)))
      (br_if $out (i32.ne (i32.shr_u (local.get $t) (i32.const 8)) (local.get $gen)))
      (local.set $chunks (i32.load offset=44 (local.get $ctl)))
      (local.set $len (i32.load offset=40 (local.get $ctl)))
      (local.set $i (i32.and (local.get $t) (i32.const 255)))
      (br_if $out (i32.ge_u (local.get $i) (local.get $chunks)))
      ;; Another thread took it first: read the ticket again.
      (br_if $claim (i32.ne
        (i32.atomic.rmw.cmpxchg offset=4 (local.get $ctl) (local.get $t) (i32.add (local.get $t) (i32.const 1)))
        (local.get $t)))
      (local.set $from (i32.mul (local.get $i) (local.get $len)))
      (if (i32.eqz (call $meanSgd
            (i32.load offset=20 (local.get $ctl)) (i32.load offset=24 (local.get $ctl))
            (i32.load offset=28 (local.get $ctl)) (i32.load offset=32 (local.get $ctl))
            (local.get $from)
            (select (i32.load offset=36 (local.get $ctl)) (i32.add (local.get $from) (local.get $len))
              (i32.lt_u (i32.load offset=36 (local.get $ctl)) (i32.add (local.get $from) (local.get $len))))
            (f32.load offset=48 (local.get $ctl)) (f32.load offset=52 (local.get $ctl))))
        (then (i32.atomic.store offset=12 (local.get $ctl) (i32.const 1))))
      (local.set $mine (i32.add (local.get $mine) (i32.const 1)))
      (drop (i32.atomic.rmw.or offset=16 (local.get $ctl) (local.get $bit)))
      (if (i32.eq (i32.add (i32.atomic.rmw.add offset=8 (local.get $ctl) (i32.const 1)) (i32.const 1)) (local.get $chunks))
        (then (drop (memory.atomic.notify offset=8 (local.get $ctl) (i32.const 1)))))
      (br $claim)))
    (local.get $mine))
)

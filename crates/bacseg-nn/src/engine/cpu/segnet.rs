//! SegNet ([`crate::networks::segnet`]) compiled for the CPU engine: every 3x3 convolution with
//! its BatchNorm folded in and ReLU in the epilogue (the engine's direct and GEMM paths), 2x2
//! max-pooling that keeps, for each pooled value, which of its four inputs was the largest (one
//! byte, not burn's 64-bit flat index), and max-unpooling that writes each value back there
//! into a zeroed map. The head is the engine's 3x3 convolution to one channel.
//!
//! Its output equals burn's `SegNet::forward` up to float rounding (see the tests). On ties
//! inside a pooling window the first of the four in row order wins; a tie only moves a value
//! between positions that hold the same value (in practice ReLU's zeros). The engine takes
//! sides that are multiples of 2^stages, so no pooling drops a row or column.

use rayon::prelude::*;

use super::kernels::{Conv, Nhwc};
use super::{Buffers, check_input, compile_conv, unsupported};
use crate::error::NnError;
use crate::networks::segnet::SegNet;

const NAME: &str = "segnet";

/// A compiled SegNet: encoder stages of convolutions, each followed by a max-pooling that
/// remembers its argmax, and decoder stages (deepest first) that unpool and convolve.
#[derive(Debug, Clone)]
pub struct SegNetNet {
    in_channels: usize,
    enc: Vec<Vec<Conv>>,
    /// Deepest first.
    dec: Vec<Vec<Conv>>,
    head: Conv,
    pub(crate) pool: Buffers,
}

impl SegNetNet {
    /// Compile `model` (its BatchNorm layers with their running statistics).
    pub fn compile(model: &SegNet) -> Result<Self, NnError> {
        let [enc, dec] = model.map_stages(|l| {
            let cin = l.conv.weight.dims()[1];
            compile_conv(NAME, &l.conv, Some(&l.bn), vec![cin], l.relu)
        })?;
        if enc.len() != dec.len() || enc.iter().any(Vec::is_empty) {
            return Err(unsupported(
                NAME,
                format!(
                    "{} encoder and {} decoder stages (one each per level, every encoder \
                     stage with a convolution)",
                    enc.len(),
                    dec.len()
                ),
            ));
        }
        let head_cin = model.head.weight.dims()[1];
        let head = compile_conv(NAME, &model.head, None, vec![head_cin], false)?;
        if head.cout != 1 {
            return Err(unsupported(
                NAME,
                format!("a head of {} channels (one logit channel)", head.cout),
            ));
        }
        Ok(Self {
            in_channels: enc[0][0].cin(),
            enc,
            dec,
            head,
            pool: Buffers::default(),
        })
    }

    /// Image channels the network takes.
    pub fn in_channels(&self) -> usize {
        self.in_channels
    }

    /// Every convolution, for [`super::Net::set_bf16`].
    pub(crate) fn convs_mut(&mut self) -> Vec<&mut Conv> {
        self.enc
            .iter_mut()
            .chain(self.dec.iter_mut())
            .flatten()
            .chain(std::iter::once(&mut self.head))
            .collect()
    }

    /// Logits `[n, h, w]` (one channel) of channels-last images `[n, h, w, in_channels]`;
    /// height and width must be non-zero multiples of 2^stages.
    pub fn forward(&mut self, x: &Nhwc) -> Result<Vec<f32>, NnError> {
        let m = 1 << self.enc.len();
        check_input(NAME, x, self.in_channels, m)?;
        let pool = &mut self.pool;
        let run = |convs: &[Conv], mut map: Nhwc, pool: &mut Buffers| {
            for conv in convs {
                let out = conv.forward(&[&map], pool.take(map.pixels() * conv.cout));
                pool.put(std::mem::replace(&mut map, out).data);
            }
            map
        };
        let mut argmax: Vec<Vec<u8>> = Vec::with_capacity(self.enc.len());
        let mut map = None::<Nhwc>;
        for stage in &self.enc {
            let first = &stage[0];
            let input = match &map {
                Some(m) => m,
                None => x,
            };
            let start = first.forward(&[input], pool.take(input.pixels() * first.cout));
            if let Some(m) = map.take() {
                pool.put(m.data);
            }
            let out = run(&stage[1..], start, pool);
            let mut which = vec![0u8; out.pixels() / 4 * out.c];
            let pooled = max_pool2x2_argmax(&out, pool.take(out.pixels() / 4 * out.c), &mut which);
            pool.put(out.data);
            argmax.push(which);
            map = Some(pooled);
        }
        let mut map = map.expect("at least one stage");
        for stage in &self.dec {
            let which = argmax.pop().expect("one pooling per decoder stage");
            let unpooled = max_unpool2x2(&map, &which, pool.take(4 * map.data.len()));
            pool.put(std::mem::replace(&mut map, unpooled).data);
            map = run(stage, map, pool);
        }
        let out = self.head.forward(&[&map], Vec::new());
        pool.put(map.data);
        Ok(out.data)
    }
}

/// 2x2 max-pooling with stride 2 (floor) into `out`'s buffer, and for each pooled value which
/// of its window's four inputs it came from (0 top left, 1 top right, 2 bottom left, 3 bottom
/// right; the first of equals) into `which`.
pub(crate) fn max_pool2x2_argmax(x: &Nhwc, out: Vec<f32>, which: &mut [u8]) -> Nhwc {
    let (h2, w2, c) = (x.h / 2, x.w / 2, x.c);
    let mut out = Nhwc::with_buffer(x.n, h2, w2, c, out);
    assert_eq!(which.len(), out.data.len(), "one index per pooled value");
    if out.data.is_empty() {
        return out;
    }
    out.data
        .par_chunks_mut(w2 * c)
        .zip(which.par_chunks_mut(w2 * c))
        .enumerate()
        .for_each(|(r, (dst, idx))| {
            let (img, y) = (r / h2, r % h2);
            let top = &x.data[(img * x.h + 2 * y) * x.w * c..][..x.w * c];
            let bottom = &x.data[(img * x.h + 2 * y + 1) * x.w * c..][..x.w * c];
            for (xo, (d, i)) in dst
                .chunks_exact_mut(c)
                .zip(idx.chunks_exact_mut(c))
                .enumerate()
            {
                let a = &top[2 * xo * c..][..2 * c];
                let b = &bottom[2 * xo * c..][..2 * c];
                for ch in 0..c {
                    let mut best = a[ch];
                    let mut at = 0u8;
                    for (k, v) in [(1u8, a[c + ch]), (2, b[ch]), (3, b[c + ch])] {
                        if v > best {
                            best = v;
                            at = k;
                        }
                    }
                    d[ch] = best;
                    i[ch] = at;
                }
            }
        });
    out
}

/// Max-unpooling: every value of `x` back at the position of its 2x2 window that `which` names,
/// in an otherwise zero map of twice `x`'s height and width (`out`'s buffer).
pub(crate) fn max_unpool2x2(x: &Nhwc, which: &[u8], out: Vec<f32>) -> Nhwc {
    let (w2, c) = (x.w, x.c);
    let w = 2 * w2;
    assert_eq!(which.len(), x.data.len(), "one index per pooled value");
    let mut out = Nhwc::with_buffer(x.n, 2 * x.h, w, c, out);
    if out.data.is_empty() {
        return out;
    }
    // Pooled row r (over the whole batch) fills output rows 2r and 2r + 1: one chunk.
    out.data
        .par_chunks_mut(2 * w * c)
        .enumerate()
        .for_each(|(r, dst)| {
            dst.fill(0.0);
            let src = &x.data[r * w2 * c..][..w2 * c];
            let idx = &which[r * w2 * c..][..w2 * c];
            for xo in 0..w2 {
                for ch in 0..c {
                    let k = usize::from(idx[xo * c + ch]);
                    dst[((k / 2) * w + 2 * xo + k % 2) * c + ch] = src[xo * c + ch];
                }
            }
        });
    out
}

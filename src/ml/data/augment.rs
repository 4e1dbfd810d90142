//! Random changes to training batches: shifts of images by whole pixels and Gaussian noise.
//! Only the trainer calls this, and only on training batches; validation, test and served inputs
//! are never augmented.

use rand::Rng;
use rand_distr::{Distribution, Normal};

use super::InputShape;
use crate::ml::spec::Augment;

/// Augments a batch in place. `batch` holds whole preprocessed examples of `shape`; `fill`
/// is the preprocessed value of a raw zero at each position, used for pixels shifted in.
pub fn apply(batch: &mut [f32], shape: &InputShape, fill: &[f32], aug: &Augment, rng: &mut impl Rng) {
    let d = shape.numel();
    let noise = (aug.noise > 0.0).then(|| Normal::new(0.0f32, aug.noise).expect("noise >= 0"));
    let mut scratch = vec![0.0f32; d];
    for example in batch.chunks_mut(d) {
        if rng.random::<f32>() >= aug.probability {
            continue;
        }
        if let (InputShape::Image { channels, height, width }, true) = (shape, aug.shift > 0) {
            let s = aug.shift as i64;
            let dy = rng.random_range(-s..=s);
            let dx = rng.random_range(-s..=s);
            if dx != 0 || dy != 0 {
                shift(example, &mut scratch, *channels, *height, *width, dy, dx, fill);
            }
        }
        if let Some(n) = &noise {
            for v in example.iter_mut() {
                *v += n.sample(rng);
            }
        }
    }
}

/// Moves an image by (dy, dx) pixels; positions that come from outside take `fill`. (The input
/// detector also uses it, to undo a benign client's shift before it scores an image.)
#[allow(clippy::too_many_arguments)] // one image's geometry; a struct would only rename them
pub fn shift(
    img: &mut [f32],
    scratch: &mut [f32],
    c: usize,
    h: usize,
    w: usize,
    dy: i64,
    dx: i64,
    fill: &[f32],
) {
    for ch in 0..c {
        for y in 0..h {
            for x in 0..w {
                let sy = y as i64 - dy;
                let sx = x as i64 - dx;
                let dst = ch * h * w + y * w + x;
                scratch[dst] = if sy >= 0 && sy < h as i64 && sx >= 0 && sx < w as i64 {
                    img[ch * h * w + sy as usize * w + sx as usize]
                } else {
                    fill[dst]
                };
            }
        }
    }
    img.copy_from_slice(scratch);
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn shift_moves_pixels_and_fills_the_edge() {
        let mut img: Vec<f32> = (1..=9).map(|v| v as f32).collect();
        let mut scratch = vec![0.0; 9];
        shift(&mut img, &mut scratch, 1, 3, 3, 1, 0, &[-1.0; 9]);
        assert_eq!(img, vec![-1.0, -1.0, -1.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    }

    #[test]
    fn zero_probability_changes_nothing() {
        let shape = InputShape::Image { channels: 1, height: 3, width: 3 };
        let mut batch = vec![0.5f32; 18];
        let aug = Augment { shift: 1, noise: 1.0, probability: 0.0 };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        apply(&mut batch, &shape, &[0.0; 9], &aug, &mut rng);
        assert!(batch.iter().all(|v| *v == 0.5));
    }
}

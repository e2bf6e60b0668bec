//! 2x2 max-pooling that remembers where each maximum came from, and the max-unpooling that puts
//! values back there (SegNet's decoder). burn 0.22 has pooling with indices but no unpooling op,
//! so unpooling is a scatter into a zero map: burn's autodiff differentiates scatter (the gradient
//! of each value is the output gradient gathered at its index), which gives unpooling its
//! backward pass on every backend without custom kernels.

use burn::tensor::ops::MaxPoolOptions;
use burn::tensor::{IndexingUpdateOp, Int, Tensor};

/// Where the maxima of a 2x2 max-pooling came from: for every pooled value, the flat index
/// `row * width + col` into its channel of the un-pooled map, plus that map's size.
#[derive(Debug, Clone)]
pub struct PoolIndices {
    indices: Tensor<4, Int>,
    size: [usize; 2],
}

impl PoolIndices {
    /// Spatial size `[height, width]` of the map before pooling (the size unpooling restores).
    pub fn size(&self) -> [usize; 2] {
        self.size
    }
}

/// 2x2 stride-2 max-pooling that also returns the argmax positions, as
/// `nn.MaxPool2d(2, return_indices=True)`. Odd trailing rows/columns are dropped (floor).
pub fn max_pool2x2_with_indices(x: Tensor<4>) -> (Tensor<4>, PoolIndices) {
    let [_, _, height, width] = x.dims();
    let (pooled, indices) =
        burn::tensor::module::max_pool2d_with_indices(x, MaxPoolOptions::new([2, 2]));
    (
        pooled,
        PoolIndices {
            indices,
            size: [height, width],
        },
    )
}

/// Max-unpooling, as `nn.MaxUnpool2d(2)(x, indices, output_size)`: every value of `x` goes back to
/// the position its maximum came from, every other position is zero.
///
/// # Panics
/// If `x` does not have the shape of the pooled map that `indices` came from; that is a wiring
/// error inside a model, never a property of user input.
pub fn max_unpool2x2(x: Tensor<4>, indices: &PoolIndices) -> Tensor<4> {
    let [batch, channels, h, w] = x.dims();
    assert_eq!(
        indices.indices.dims(),
        [batch, channels, h, w],
        "max_unpool2x2: values and indices differ in shape"
    );
    let [out_h, out_w] = indices.size;
    let device = x.device();
    let flat_values = x.reshape([batch, channels, h * w]);
    let flat_indices = indices.indices.clone().reshape([batch, channels, h * w]);
    // Non-overlapping 2x2 windows make every index unique, so Add is an exact placement.
    Tensor::<3>::zeros([batch, channels, out_h * out_w], &device)
        .scatter(2, flat_indices, flat_values, IndexingUpdateOp::Add)
        .reshape([batch, channels, out_h, out_w])
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    fn values(t: Tensor<4>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().unwrap_or_default()
    }

    #[test]
    fn unpool_puts_each_maximum_back_in_place() {
        let device = Device::default();
        #[rustfmt::skip]
        let x = Tensor::<4>::from_data(
            TensorData::new(vec![
                1.0f32, 5.0, 2.0, 0.0, 9.0,
                3.0,    4.0, 8.0, 1.0, 9.0,
                0.0,    2.0, 7.0, 6.0, 9.0,
            ], [1, 1, 3, 5]),
            &device,
        );
        let (pooled, idx) = max_pool2x2_with_indices(x);
        assert_eq!(values(pooled.clone()), vec![5.0, 8.0]);
        assert_eq!(idx.size(), [3, 5]);
        let restored = max_unpool2x2(pooled, &idx);
        assert_eq!(restored.dims(), [1, 1, 3, 5]);
        #[rustfmt::skip]
        let expected = vec![
            0.0, 5.0, 0.0, 0.0, 0.0,
            0.0, 0.0, 8.0, 0.0, 0.0,
            0.0, 0.0, 0.0, 0.0, 0.0,
        ];
        assert_eq!(values(restored), expected);
    }

    #[test]
    fn unpool_gradient_is_output_gradient_at_the_argmax() {
        let device = Device::default().autodiff();
        let x = Tensor::<4>::from_data(
            TensorData::new(
                (0..32).map(|v| ((v * 7) % 11) as f32).collect::<Vec<_>>(),
                [1, 2, 4, 4],
            ),
            &device,
        );
        let (pooled, idx) = max_pool2x2_with_indices(x.clone());
        let pooled = pooled.detach().require_grad();
        let unpooled = max_unpool2x2(pooled.clone(), &idx);
        // Weight each output position differently so a wrong gather shows up as a wrong number.
        let weights = Tensor::<4>::from_data(
            TensorData::new(
                (0..32).map(|v| v as f32 + 1.0).collect::<Vec<_>>(),
                [1, 2, 4, 4],
            ),
            &device,
        );
        let grads = (unpooled * weights.clone()).sum().backward();
        let grad = pooled.grad(&grads).map(values).unwrap_or_default();
        // d(sum(w * unpool(p)))/dp = w at the argmax position of each window.
        let flat_idx = idx
            .indices
            .into_data()
            .convert::<i64>()
            .try_to_vec::<i64>()
            .unwrap_or_default();
        let w = values(weights);
        let expected: Vec<f32> = flat_idx
            .iter()
            .enumerate()
            .map(|(k, &i)| w[(k / 4) * 16 + i as usize])
            .collect();
        assert_eq!(grad.len(), 8);
        assert_eq!(grad, expected);
    }
}

//! ONNX export of every network: a standard `ModelProto` (IR version 8, default-domain opset
//! 18) whose graph maps `input` `[batch, channels, height, width]` (float, dynamic batch and
//! sides) to `output` `[batch, 1, height, width]`, exactly as the burn model's `forward` in
//! validation mode (BatchNorm with running statistics):
//! - DT-UNet, UNet: Conv, BatchNormalization, Relu, MaxPool, ConvTranspose or Resize (bilinear,
//!   aligned corners, to the skip's size), Concat;
//! - SegNet: the same convolution units, MaxPool with its Indices output and MaxUnpool (to the
//!   pre-pooling shape);
//! - ContextNet: grouped (depthwise) and dilated Conv, Add, Resize (bilinear, half-pixel: the
//!   1/4 input, the deep branch to the shallow one's size, the logits to the input's size);
//! - SCU-Net: the input normalisation (Sub, Div), PRelu, AveragePool (padding counted),
//!   GlobalAveragePool, Flatten, Gemm, Sigmoid, Unsqueeze, Mul, Resize (aligned corners).
//!
//! Output sizes of every Resize and MaxUnpool come from `Shape` of the tensors they match, so
//! one file serves every input size the network accepts. The messages are the subset of
//! `onnx.proto` the graphs need, with its field numbers, encoded by `prost`.

use burn::nn::conv::{Conv2d, ConvTranspose2d};
use burn::nn::{BatchNorm, Linear, PRelu};
use burn::tensor::Tensor;
use prost::Message;

use crate::error::NnError;

/// The default-domain operator set the graph uses.
pub const OPSET: i64 = 18;
/// The ONNX IR version written (the one that goes with opset 18).
pub const IR_VERSION: i64 = 8;

#[derive(Clone, PartialEq, Message)]
pub struct ModelProto {
    #[prost(int64, tag = "1")]
    pub ir_version: i64,
    #[prost(message, repeated, tag = "8")]
    pub opset_import: Vec<OperatorSetIdProto>,
    #[prost(string, tag = "2")]
    pub producer_name: String,
    #[prost(string, tag = "3")]
    pub producer_version: String,
    #[prost(string, tag = "6")]
    pub doc_string: String,
    #[prost(message, optional, tag = "7")]
    pub graph: Option<GraphProto>,
}

#[derive(Clone, PartialEq, Message)]
pub struct OperatorSetIdProto {
    #[prost(string, tag = "1")]
    pub domain: String,
    #[prost(int64, tag = "2")]
    pub version: i64,
}

#[derive(Clone, PartialEq, Message)]
pub struct GraphProto {
    #[prost(message, repeated, tag = "1")]
    pub node: Vec<NodeProto>,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(message, repeated, tag = "5")]
    pub initializer: Vec<TensorProto>,
    #[prost(message, repeated, tag = "11")]
    pub input: Vec<ValueInfoProto>,
    #[prost(message, repeated, tag = "12")]
    pub output: Vec<ValueInfoProto>,
}

#[derive(Clone, PartialEq, Message)]
pub struct NodeProto {
    #[prost(string, repeated, tag = "1")]
    pub input: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    pub output: Vec<String>,
    #[prost(string, tag = "3")]
    pub name: String,
    #[prost(string, tag = "4")]
    pub op_type: String,
    #[prost(message, repeated, tag = "5")]
    pub attribute: Vec<AttributeProto>,
}

/// `AttributeProto.AttributeType` values used here.
const ATTR_FLOAT: i32 = 1;
const ATTR_INT: i32 = 2;
const ATTR_STRING: i32 = 3;
const ATTR_INTS: i32 = 7;

#[derive(Clone, PartialEq, Message)]
pub struct AttributeProto {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(int32, tag = "20")]
    pub r#type: i32,
    #[prost(float, tag = "2")]
    pub f: f32,
    #[prost(int64, tag = "3")]
    pub i: i64,
    #[prost(bytes = "vec", tag = "4")]
    pub s: Vec<u8>,
    #[prost(int64, repeated, tag = "8")]
    pub ints: Vec<i64>,
}

/// `TensorProto.DataType.FLOAT`.
const FLOAT: i32 = 1;
/// `TensorProto.DataType.INT64`.
const INT64: i32 = 7;

#[derive(Clone, PartialEq, Message)]
pub struct TensorProto {
    #[prost(int64, repeated, tag = "1")]
    pub dims: Vec<i64>,
    #[prost(int32, tag = "2")]
    pub data_type: i32,
    #[prost(string, tag = "8")]
    pub name: String,
    /// Little-endian values.
    #[prost(bytes = "vec", tag = "9")]
    pub raw_data: Vec<u8>,
}

#[derive(Clone, PartialEq, Message)]
pub struct ValueInfoProto {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub r#type: Option<TypeProto>,
}

#[derive(Clone, PartialEq, Message)]
pub struct TypeProto {
    /// The `tensor_type` member of the `value` oneof.
    #[prost(message, optional, tag = "1")]
    pub tensor_type: Option<TensorTypeProto>,
}

#[derive(Clone, PartialEq, Message)]
pub struct TensorTypeProto {
    #[prost(int32, tag = "1")]
    pub elem_type: i32,
    #[prost(message, optional, tag = "2")]
    pub shape: Option<TensorShapeProto>,
}

#[derive(Clone, PartialEq, Message)]
pub struct TensorShapeProto {
    #[prost(message, repeated, tag = "1")]
    pub dim: Vec<Dimension>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Dimension {
    #[prost(int64, optional, tag = "1")]
    pub dim_value: Option<i64>,
    #[prost(string, optional, tag = "2")]
    pub dim_param: Option<String>,
}

pub(crate) fn int(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: ATTR_INT,
        i,
        ..Default::default()
    }
}

pub(crate) fn ints(name: &str, ints: &[usize]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: ATTR_INTS,
        ints: ints.iter().map(|&v| v as i64).collect(),
        ..Default::default()
    }
}

pub(crate) fn string(name: &str, s: &str) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: ATTR_STRING,
        s: s.as_bytes().to_vec(),
        ..Default::default()
    }
}

pub(crate) fn float(name: &str, f: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: ATTR_FLOAT,
        f,
        ..Default::default()
    }
}

fn value_info(name: &str, dims: [Dimension; 4]) -> ValueInfoProto {
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TensorTypeProto {
                elem_type: FLOAT,
                shape: Some(TensorShapeProto { dim: dims.into() }),
            }),
        }),
    }
}

fn symbolic(name: &str) -> Dimension {
    Dimension {
        dim_value: None,
        dim_param: Some(name.into()),
    }
}

fn fixed(v: usize) -> Dimension {
    Dimension {
        dim_value: Some(v as i64),
        dim_param: None,
    }
}

/// Accumulates the nodes and weights of a graph; every method returns its output's name.
pub(crate) struct GraphBuilder {
    model: &'static str,
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
}

/// The graph's input.
pub(crate) const INPUT: &str = "input";

impl GraphBuilder {
    pub(crate) fn new(model: &'static str) -> Self {
        Self {
            model,
            nodes: Vec::new(),
            initializers: Vec::new(),
        }
    }

    pub(crate) fn node(
        &mut self,
        op: &str,
        inputs: Vec<String>,
        attributes: Vec<AttributeProto>,
    ) -> String {
        let name = format!("{}_{}", op.to_lowercase(), self.nodes.len());
        self.nodes.push(NodeProto {
            input: inputs,
            output: vec![name.clone()],
            name: name.clone(),
            op_type: op.into(),
            attribute: attributes,
        });
        name
    }

    pub(crate) fn weight<const D: usize>(
        &mut self,
        name: String,
        t: Tensor<D>,
    ) -> Result<String, NnError> {
        let dims = t.dims().iter().map(|&d| d as i64).collect();
        let values = t
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .map_err(|e| NnError::Config {
                model: self.model,
                reason: format!("reading {name}: {e:?}"),
            })?;
        self.initializers.push(TensorProto {
            dims,
            data_type: FLOAT,
            name: name.clone(),
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        });
        Ok(name)
    }

    /// A float scalar constant.
    pub(crate) fn scalar(&mut self, value: f32) -> String {
        let name = format!("const_{}", self.initializers.len());
        self.initializers.push(TensorProto {
            dims: Vec::new(),
            data_type: FLOAT,
            name: name.clone(),
            raw_data: value.to_le_bytes().to_vec(),
        });
        name
    }

    /// 2x2 max-pooling with stride 2: the pooled values and ONNX's flat indices of the maxima.
    pub(crate) fn max_pool_with_indices(&mut self, x: String) -> [String; 2] {
        let name = self.node(
            "MaxPool",
            vec![x],
            vec![ints("kernel_shape", &[2, 2]), ints("strides", &[2, 2])],
        );
        let indices = format!("{name}.indices");
        if let Some(node) = self.nodes.last_mut() {
            node.output.push(indices.clone());
        }
        [name, indices]
    }

    /// A one-dimensional int64 constant.
    pub(crate) fn int64s(&mut self, values: &[i64]) -> String {
        let name = format!("const_{}", self.initializers.len());
        self.initializers.push(TensorProto {
            dims: vec![values.len() as i64],
            data_type: INT64,
            name: name.clone(),
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        });
        name
    }

    pub(crate) fn conv(&mut self, x: String, conv: &Conv2d) -> Result<String, NnError> {
        let id = self.nodes.len();
        let mut inputs = vec![
            x,
            self.weight(format!("conv_{id}.weight"), conv.weight.val())?,
        ];
        if let Some(b) = &conv.bias {
            inputs.push(self.weight(format!("conv_{id}.bias"), b.val())?);
        }
        let [kh, kw] = conv.kernel_size;
        let [dh, dw] = conv.dilation;
        let (top, left, bottom, right) = match conv.padding {
            burn::nn::PaddingConfig2d::Explicit(t, l, b, r) => (t, l, b, r),
            burn::nn::PaddingConfig2d::Valid => (0, 0, 0, 0),
            burn::nn::PaddingConfig2d::Same => {
                let (ph, pw) = (dh * (kh - 1), dw * (kw - 1));
                (ph / 2, pw / 2, ph - ph / 2, pw - pw / 2)
            }
        };
        Ok(self.node(
            "Conv",
            inputs,
            vec![
                ints("kernel_shape", &conv.kernel_size),
                ints("strides", &conv.stride),
                ints("dilations", &conv.dilation),
                int("group", conv.groups as i64),
                ints("pads", &[top, left, bottom, right]),
            ],
        ))
    }

    pub(crate) fn batch_norm(&mut self, x: String, bn: &BatchNorm) -> Result<String, NnError> {
        let id = self.nodes.len();
        let inputs = vec![
            x,
            self.weight(format!("bn_{id}.scale"), bn.gamma.val())?,
            self.weight(format!("bn_{id}.bias"), bn.beta.val())?,
            self.weight(format!("bn_{id}.mean"), bn.running_mean.value())?,
            self.weight(format!("bn_{id}.var"), bn.running_var.value())?,
        ];
        Ok(self.node(
            "BatchNormalization",
            inputs,
            vec![float("epsilon", bn.epsilon as f32)],
        ))
    }

    pub(crate) fn relu(&mut self, x: String) -> String {
        self.node("Relu", vec![x], vec![])
    }

    /// PReLU with one slope or one per channel (stored `[channels, 1, 1]` so that it
    /// broadcasts over `[batch, channels, height, width]`).
    pub(crate) fn prelu(&mut self, x: String, act: &PRelu) -> Result<String, NnError> {
        let id = self.nodes.len();
        let alpha = act.alpha.val();
        let [c] = alpha.dims();
        let slope = self.weight(format!("prelu_{id}.slope"), alpha.reshape([c, 1, 1]))?;
        Ok(self.node("PRelu", vec![x, slope], vec![]))
    }

    /// A linear layer on `[batch, features]` (burn's weight is `[in, out]`: Gemm's B as is).
    pub(crate) fn linear(&mut self, x: String, linear: &Linear) -> Result<String, NnError> {
        let id = self.nodes.len();
        let mut inputs = vec![
            x,
            self.weight(format!("fc_{id}.weight"), linear.weight.val())?,
        ];
        if let Some(b) = &linear.bias {
            inputs.push(self.weight(format!("fc_{id}.bias"), b.val())?);
        }
        Ok(self.node("Gemm", inputs, vec![]))
    }

    pub(crate) fn conv_transpose(
        &mut self,
        x: String,
        up: &ConvTranspose2d,
    ) -> Result<String, NnError> {
        let id = self.nodes.len();
        let mut inputs = vec![x, self.weight(format!("up_{id}.weight"), up.weight.val())?];
        if let Some(b) = &up.bias {
            inputs.push(self.weight(format!("up_{id}.bias"), b.val())?);
        }
        let [ph, pw] = up.padding;
        Ok(self.node(
            "ConvTranspose",
            inputs,
            vec![
                ints("kernel_shape", &up.kernel_size),
                ints("strides", &up.stride),
                ints("dilations", &up.dilation),
                int("group", up.groups as i64),
                ints("pads", &[ph, pw, ph, pw]),
                ints("output_padding", &up.padding_out),
            ],
        ))
    }

    /// `[height, width]` of `x`, as an int64 tensor.
    pub(crate) fn spatial_size(&mut self, x: &str) -> String {
        self.node("Shape", vec![x.to_string()], vec![int("start", 2)])
    }

    /// Bilinear resize of `x` to `sizes` (`[height, width]`), corners aligned or half-pixel
    /// centres (PyTorch's `align_corners=False`), without antialiasing.
    pub(crate) fn resize(&mut self, x: String, sizes: String, align_corners: bool) -> String {
        let mode = if align_corners {
            "align_corners"
        } else {
            "half_pixel"
        };
        self.node(
            "Resize",
            vec![x, String::new(), String::new(), sizes],
            vec![
                ints("axes", &[2, 3]),
                string("mode", "linear"),
                string("coordinate_transformation_mode", mode),
            ],
        )
    }

    /// The model whose graph ends at `output` (renamed `output`), taking `in_channels`.
    pub(crate) fn finish(mut self, output: &str, in_channels: usize, doc: String) -> Vec<u8> {
        for node in &mut self.nodes {
            for name in &mut node.output {
                if name == output {
                    *name = "output".into();
                }
            }
        }
        let model = self.model;
        let graph = GraphProto {
            node: self.nodes,
            name: model.into(),
            initializer: self.initializers,
            input: vec![value_info(
                INPUT,
                [
                    symbolic("batch"),
                    fixed(in_channels),
                    symbolic("height"),
                    symbolic("width"),
                ],
            )],
            output: vec![value_info(
                "output",
                [
                    symbolic("batch"),
                    fixed(1),
                    symbolic("height"),
                    symbolic("width"),
                ],
            )],
        };
        let proto = ModelProto {
            ir_version: IR_VERSION,
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: OPSET,
            }],
            producer_name: "bacseg".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            doc_string: format!(
                "{model}: input [batch, {in_channels}, height, width] preprocessed grey values in \
                 [0, 1]; output [batch, 1, height, width] {doc}"
            ),
            graph: Some(graph),
        };
        proto.encode_to_vec()
    }
}

pub(crate) const LOGITS: &str = "logits (probability = sigmoid)";

/// Decode an ONNX model file's bytes (for inspecting an export).
pub fn read(bytes: &[u8]) -> Result<ModelProto, NnError> {
    ModelProto::decode(bytes).map_err(|e| NnError::Config {
        model: "onnx",
        reason: format!("not an ONNX model: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Device, DtUnetConfig, Module, SegmentationModel, UnetConfig};

    #[test]
    fn dt_unet_graph_has_the_expected_operators_and_every_weight() {
        let model = DtUnetConfig::new()
            .with_widths(vec![2, 4, 8])
            .init(&Device::default())
            .unwrap()
            .valid();
        let bytes = model.onnx().unwrap().unwrap();
        let proto = ModelProto::decode(bytes.as_slice()).unwrap();
        assert_eq!(proto.ir_version, IR_VERSION);
        assert_eq!(proto.opset_import[0].version, OPSET);
        let graph = proto.graph.unwrap();
        let count = |op: &str| graph.node.iter().filter(|n| n.op_type == op).count();
        // 3 encoder + 2 decoder double convolutions, and the head.
        assert_eq!(count("Conv"), 11);
        assert_eq!(count("BatchNormalization"), 10);
        assert_eq!(count("Relu"), 10);
        assert_eq!(
            (count("MaxPool"), count("ConvTranspose"), count("Concat")),
            (2, 2, 2)
        );
        assert_eq!(graph.node.last().unwrap().output, ["output"]);
        // Every parameter and running statistic is an initializer: trainable parameters plus
        // two running statistics per BatchNorm.
        let values: usize = graph
            .initializer
            .iter()
            .map(|t| t.dims.iter().product::<i64>() as usize)
            .sum();
        let bn_channels = 2 * (2 + 4 + 8 + 4 + 2) * 2;
        assert_eq!(values, model.trainable_parameters() + bn_channels);
        for t in &graph.initializer {
            assert_eq!(
                t.raw_data.len(),
                4 * t.dims.iter().product::<i64>() as usize
            );
        }
    }

    /// `model` (built on an autodiff device, so in training mode) after a few forward passes
    /// that move its BatchNorm running statistics away from their initial values, in
    /// validation mode: the exported graph must carry the statistics, not the defaults.
    fn with_running_statistics<M: SegmentationModel>(model: M, side: usize) -> M {
        let device = Device::default().autodiff();
        let c = model.in_channels();
        for seed in 0..3 {
            let values = (0..2 * c * side * side)
                .map(|i| ((i * 7919 + seed * 104_729) % 1000) as f32 / 250.0 - 1.0)
                .collect::<Vec<f32>>();
            let x = Tensor::<4>::from_data(
                burn::tensor::TensorData::new(values, [2, c, side, side]),
                &device,
            );
            let _ = model.forward(x);
        }
        model.valid()
    }

    /// Small configurations of the three networks that are not U-Nets, with trained-looking
    /// BatchNorm statistics, and an input side each accepts.
    fn other_networks() -> (crate::SegNet, crate::ContextNet, crate::ScuNet) {
        let device = Device::default().autodiff();
        let segnet = crate::SegNetConfig::new()
            .with_widths(vec![3, 5])
            .with_convs(vec![1, 2])
            .init(&device)
            .unwrap();
        let contextnet = crate::ContextNetConfig::new()
            .with_base_width(4)
            .with_expansion(2)
            .init(&device)
            .unwrap();
        let scunet = crate::ScuNetConfig::new().init(&device).unwrap();
        (
            with_running_statistics(segnet, 16),
            with_running_statistics(contextnet, 64),
            with_running_statistics(scunet, 16),
        )
    }

    fn graph_of<M: SegmentationModel>(model: &M) -> GraphProto {
        let bytes = model.onnx().unwrap().unwrap();
        ModelProto::decode(bytes.as_slice()).unwrap().graph.unwrap()
    }

    fn count(graph: &GraphProto, op: &str) -> usize {
        graph.node.iter().filter(|n| n.op_type == op).count()
    }

    #[test]
    fn segnet_contextnet_and_scunet_graphs_have_their_operators() {
        let (segnet, contextnet, scunet) = other_networks();
        let g = graph_of(&segnet);
        // 2 stages: 3 encoder and 2 decoder units (the first stage's last one is the head's).
        assert_eq!((count(&g, "Conv"), count(&g, "BatchNormalization")), (6, 5));
        assert_eq!((count(&g, "MaxPool"), count(&g, "MaxUnpool")), (2, 2));
        let pool = g.node.iter().find(|n| n.op_type == "MaxPool").unwrap();
        assert_eq!(pool.output.len(), 2, "values and indices");
        let unpool = g.node.iter().find(|n| n.op_type == "MaxUnpool").unwrap();
        assert_eq!(unpool.input.len(), 3, "values, indices, output shape");

        let g = graph_of(&contextnet);
        assert_eq!(count(&g, "Resize"), 3);
        assert!(count(&g, "Add") >= 2, "residual bottlenecks and the fusion");
        assert!(
            g.node
                .iter()
                .any(|n| n.op_type == "Conv"
                    && n.attribute.iter().any(|a| a.name == "group" && a.i > 1)),
            "depthwise convolutions"
        );

        let g = graph_of(&scunet);
        assert_eq!(count(&g, "AveragePool"), 2);
        assert_eq!((count(&g, "GlobalAveragePool"), count(&g, "Gemm")), (2, 4));
        assert_eq!(count(&g, "Resize"), 3);
        assert_eq!(
            count(&g, "PRelu"),
            3 + 2 + 2 * 2 + 2 * 2,
            "stem, injections, context blocks, decoder"
        );
        assert_eq!(g.node.last().unwrap().output, ["output"]);
        assert_eq!(
            g.node[0].op_type, "Sub",
            "the input normalisation comes first"
        );
    }

    /// Every network's export run by ONNX Runtime gives burn's outputs.
    #[cfg(feature = "ort")]
    #[test]
    fn onnx_runtime_reproduces_burn_for_all_five_networks() {
        use crate::engine::ort::OrtNet;
        fn check<M: SegmentationModel>(model: &M, side: usize) -> Option<()> {
            let shape = [2, model.in_channels(), side, side];
            let input: Vec<f32> = (0..shape.iter().product::<usize>())
                .map(|i| ((i * 2_654_435_761) % 1000) as f32 / 1000.0)
                .collect();
            let want = crate::outputs_of(model, input.clone(), shape).unwrap();
            let mut net = match OrtNet::new(&model.onnx().unwrap().unwrap(), shape[1]) {
                Ok(net) => net,
                Err(e) => {
                    eprintln!("skipped: no ONNX Runtime to run the exports with ({e})");
                    return None;
                }
            };
            let got = net.forward(input, shape).unwrap();
            let scale = want.iter().fold(1.0f32, |m, v| m.max(v.abs()));
            let worst = want
                .iter()
                .zip(&got)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(
                worst <= 1e-4 * scale,
                "{}: largest difference {worst}",
                model.name()
            );
            Some(())
        }
        let device = Device::default().autodiff();
        let dt = crate::DtUnetConfig::new()
            .with_widths(vec![2, 4, 8])
            .init(&device)
            .unwrap();
        if check(&with_running_statistics(dt, 16), 16).is_none() {
            return;
        }
        let unet = UnetConfig::new()
            .with_widths(vec![2, 4])
            .init(&device)
            .unwrap();
        check(&with_running_statistics(unet, 16), 24);
        let (segnet, contextnet, scunet) = other_networks();
        check(&segnet, 24);
        check(&contextnet, 64);
        check(&scunet, 24);
    }

    #[test]
    fn unet_resizes_to_the_skip_size() {
        let model = UnetConfig::new()
            .with_widths(vec![2, 4])
            .init(&Device::default())
            .unwrap();
        let proto = ModelProto::decode(model.onnx().unwrap().unwrap().as_slice()).unwrap();
        let graph = proto.graph.unwrap();
        let resize = graph.node.iter().find(|n| n.op_type == "Resize").unwrap();
        assert_eq!(resize.input.len(), 4);
        let shape = graph
            .node
            .iter()
            .find(|n| n.output[0] == resize.input[3])
            .unwrap();
        assert_eq!(shape.op_type, "Shape");
        let input = &graph.input[0];
        let dims = &input.r#type.as_ref().unwrap().tensor_type.as_ref().unwrap();
        assert_eq!(dims.shape.as_ref().unwrap().dim[1].dim_value, Some(3));
    }
}

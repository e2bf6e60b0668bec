//! ONNX export of the U-Net-shaped networks (DT-UNet, UNet): a standard `ModelProto` (IR
//! version 8, default-domain opset 18) whose graph maps `input` `[batch, channels, height,
//! width]` (float, dynamic batch and sides) to the logits `output` `[batch, 1, height, width]`,
//! exactly as the burn model's `forward` in validation mode: Conv, BatchNormalization (running
//! statistics), Relu, MaxPool, ConvTranspose or Resize (bilinear, aligned corners, to the skip's
//! size), Concat. The messages are the subset of `onnx.proto` the graph needs, with its field
//! numbers, encoded by `prost`.

use burn::nn::BatchNorm;
use burn::nn::conv::{Conv2d, ConvTranspose2d};
use burn::tensor::Tensor;
use prost::Message;

use crate::blocks::{DoubleConv, UnetParts};
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

fn int(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: ATTR_INT,
        i,
        ..Default::default()
    }
}

fn ints(name: &str, ints: &[usize]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: ATTR_INTS,
        ints: ints.iter().map(|&v| v as i64).collect(),
        ..Default::default()
    }
}

fn string(name: &str, s: &str) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: ATTR_STRING,
        s: s.as_bytes().to_vec(),
        ..Default::default()
    }
}

fn float(name: &str, f: f32) -> AttributeProto {
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
struct Builder {
    model: &'static str,
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
}

impl Builder {
    fn node(&mut self, op: &str, inputs: Vec<String>, attributes: Vec<AttributeProto>) -> String {
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

    fn weight<const D: usize>(&mut self, name: String, t: Tensor<D>) -> Result<String, NnError> {
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

    fn conv(&mut self, x: String, conv: &Conv2d) -> Result<String, NnError> {
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

    fn batch_norm(&mut self, x: String, bn: &BatchNorm) -> Result<String, NnError> {
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

    fn double(&mut self, x: String, block: &DoubleConv) -> Result<String, NnError> {
        let y = self.conv(x, &block.conv1)?;
        let y = self.batch_norm(y, &block.bn1)?;
        let y = self.node("Relu", vec![y], vec![]);
        let y = self.conv(y, &block.conv2)?;
        let y = self.batch_norm(y, &block.bn2)?;
        Ok(self.node("Relu", vec![y], vec![]))
    }

    fn conv_transpose(&mut self, x: String, up: &ConvTranspose2d) -> Result<String, NnError> {
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

    /// Bilinear resize of `x` to `like`'s height and width, corners aligned.
    fn resize_like(&mut self, x: String, like: &str) -> String {
        let sizes = self.node("Shape", vec![like.to_string()], vec![int("start", 2)]);
        self.node(
            "Resize",
            vec![x, String::new(), String::new(), sizes],
            vec![
                ints("axes", &[2, 3]),
                string("mode", "linear"),
                string("coordinate_transformation_mode", "align_corners"),
            ],
        )
    }
}

/// The ONNX model of a U-Net (see the module documentation; use
/// [`crate::SegmentationModel::onnx`]).
pub fn export(parts: &UnetParts<'_>) -> Result<Vec<u8>, NnError> {
    let UnetParts {
        name: model,
        down,
        up,
        head,
    } = parts;
    let model = *model;
    let in_channels = down.first().map_or(0, |d| d.conv1.weight.dims()[1]);
    let mut b = Builder {
        model,
        nodes: Vec::new(),
        initializers: Vec::new(),
    };
    let mut x = "input".to_string();
    let mut skips = Vec::new();
    for (i, block) in down.iter().enumerate() {
        if i > 0 {
            x = b.node(
                "MaxPool",
                vec![x],
                vec![ints("kernel_shape", &[2, 2]), ints("strides", &[2, 2])],
            );
        }
        x = b.double(x, block)?;
        skips.push(x.clone());
    }
    skips.pop();
    for &(transposed, block) in up {
        let skip = skips.pop().ok_or_else(|| NnError::Config {
            model,
            reason: "more decoder than encoder levels".into(),
        })?;
        let upsampled = match transposed {
            Some(t) => b.conv_transpose(x, t)?,
            None => b.resize_like(x, &skip),
        };
        let cat = b.node("Concat", vec![skip, upsampled], vec![int("axis", 1)]);
        x = b.double(cat, block)?;
    }
    b.conv(x, head)?;
    // The head's result is the graph output.
    b.nodes.last_mut().expect("the head node").output = vec!["output".into()];
    let graph = GraphProto {
        node: b.nodes,
        name: model.into(),
        initializer: b.initializers,
        input: vec![value_info(
            "input",
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
             [0, 1]; output [batch, 1, height, width] logits (probability = sigmoid)"
        ),
        graph: Some(graph),
    };
    Ok(proto.encode_to_vec())
}

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

"""What the ONNX backend node tests may not do, case by case, each with its reason.

`test_onnx_node_tests.py` runs every node test case whose operators are all supported. A case listed
here is skipped with its reason, and compile_onnx must refuse it with a ModelImportError (the tool
must never crash or silently compute something else on it). A case in no list must pass with
rtol 1e-4 / atol 1e-5. The consistency test fails on any name that is not a collected case, and on any
non-float32 case that is in no list, so nothing is skipped silently.
"""

from __future__ import annotations

# -- refused on purpose ---------------------------------------------------------------------------------

INTEGER_DATA = "integer tensors: lltfi-mlir computes in float32 only (int inputs/outputs are refused)"
CAST_NON_FLOAT32 = ("Cast/CastLike from or to a type other than float32 (float16, double, bfloat16, "
                    "float8/float4, int2/int4): only float32 tensors are supported")
DROPOUT_MASK = "Dropout's bool mask output: inference only, the mask is not computed"
TRAINING_MODE = "training mode (batch statistics / random dropout): inference only"
SEQUENCE_OPTIONAL = "sequence / optional types: only tensors are supported"
MAXPOOL_INDICES = "MaxPool's int64 Indices output is not supported"
PAD_MODE = "Pad mode other than 'constant' (and int32 data)"
OTHER_FLOATS = "float16 / double tensors: lltfi-mlir computes in float32 only"

_GROUPS = {
    INTEGER_DATA: [
        "test_add_int8",
        "test_add_int16",
        "test_add_uint8",
        "test_add_uint16",
        "test_add_uint32",
        "test_add_uint64",
        "test_clip_default_int8_min",
        "test_clip_default_int8_max",
        "test_clip_default_int8_inbounds",
        "test_clip_default_int8_inbounds_expanded",
        "test_div_int8",
        "test_div_int16",
        "test_div_int32_trunc",
        "test_div_uint8",
        "test_div_uint16",
        "test_div_uint32",
        "test_div_uint64",
        "test_maxpool_2d_uint8",
        "test_max_int8",
        "test_max_int16",
        "test_max_int32",
        "test_max_int64",
        "test_max_uint8",
        "test_max_uint16",
        "test_max_uint32",
        "test_max_uint64",
        "test_min_int8",
        "test_min_int16",
        "test_min_int32",
        "test_min_int64",
        "test_min_uint8",
        "test_min_uint16",
        "test_min_uint32",
        "test_min_uint64",
        "test_mul_int8",
        "test_mul_int16",
        "test_mul_uint8",
        "test_mul_uint16",
        "test_mul_uint32",
        "test_mul_uint64",
        "test_pow_types_int64_float32",
        "test_pow_types_int32_float32",
        "test_pow_types_int64_int64",
        "test_pow_types_int32_int32",
        "test_sub_int8",
        "test_sub_int16",
        "test_sub_uint8",
        "test_sub_uint16",
        "test_sub_uint32",
        "test_sub_uint64",
    ],
    CAST_NON_FLOAT32: [
        "test_cast_FLOAT_to_FLOAT16",
        "test_cast_FLOAT_to_DOUBLE",
        "test_cast_FLOAT16_to_FLOAT",
        "test_cast_FLOAT16_to_DOUBLE",
        "test_cast_DOUBLE_to_FLOAT",
        "test_cast_DOUBLE_to_FLOAT16",
        "test_cast_FLOAT_to_BFLOAT16",
        "test_cast_BFLOAT16_to_FLOAT",
        "test_cast_FLOAT_to_FLOAT8E4M3FN",
        "test_cast_FLOAT16_to_FLOAT8E4M3FN",
        "test_cast_FLOAT_to_FLOAT8E4M3FNUZ",
        "test_cast_FLOAT16_to_FLOAT8E4M3FNUZ",
        "test_cast_FLOAT8E4M3FN_to_FLOAT",
        "test_cast_FLOAT8E4M3FN_to_FLOAT16",
        "test_cast_FLOAT8E4M3FNUZ_to_FLOAT",
        "test_cast_FLOAT8E4M3FNUZ_to_FLOAT16",
        "test_cast_FLOAT_to_FLOAT8E5M2",
        "test_cast_FLOAT16_to_FLOAT8E5M2",
        "test_cast_FLOAT_to_FLOAT8E5M2FNUZ",
        "test_cast_FLOAT16_to_FLOAT8E5M2FNUZ",
        "test_cast_FLOAT8E5M2_to_FLOAT",
        "test_cast_FLOAT8E5M2_to_FLOAT16",
        "test_cast_FLOAT8E5M2FNUZ_to_FLOAT",
        "test_cast_FLOAT8E5M2FNUZ_to_FLOAT16",
        "test_cast_FLOAT_to_UINT4",
        "test_cast_FLOAT16_to_UINT4",
        "test_cast_FLOAT_to_INT4",
        "test_cast_FLOAT16_to_INT4",
        "test_cast_UINT4_to_FLOAT",
        "test_cast_UINT4_to_FLOAT16",
        "test_cast_UINT4_to_UINT8",
        "test_cast_INT4_to_FLOAT",
        "test_cast_INT4_to_FLOAT16",
        "test_cast_INT4_to_INT8",
        "test_cast_FLOAT4E2M1_to_FLOAT",
        "test_cast_FLOAT4E2M1_to_FLOAT16",
        "test_cast_FLOAT_to_FLOAT4E2M1",
        "test_cast_FLOAT16_to_FLOAT4E2M1",
        "test_cast_FLOAT_to_UINT2",
        "test_cast_FLOAT16_to_UINT2",
        "test_cast_FLOAT_to_INT2",
        "test_cast_FLOAT16_to_INT2",
        "test_cast_UINT2_to_FLOAT",
        "test_cast_UINT2_to_FLOAT16",
        "test_cast_UINT2_to_UINT8",
        "test_cast_INT2_to_FLOAT",
        "test_cast_INT2_to_FLOAT16",
        "test_cast_INT2_to_INT8",
        "test_cast_no_saturate_FLOAT_to_FLOAT8E4M3FN",
        "test_cast_no_saturate_FLOAT_to_FLOAT8E4M3FNUZ",
        "test_cast_no_saturate_FLOAT_to_FLOAT8E5M2",
        "test_cast_no_saturate_FLOAT_to_FLOAT8E5M2FNUZ",
        "test_cast_no_saturate_FLOAT16_to_FLOAT8E4M3FN",
        "test_cast_no_saturate_FLOAT16_to_FLOAT8E4M3FNUZ",
        "test_cast_no_saturate_FLOAT16_to_FLOAT8E5M2",
        "test_cast_no_saturate_FLOAT16_to_FLOAT8E5M2FNUZ",
        "test_cast_e8m0_FLOAT_to_FLOAT8E8M0",
        "test_cast_e8m0_FLOAT16_to_FLOAT8E8M0",
        "test_cast_e8m0_FLOAT8E8M0_to_FLOAT",
        "test_cast_e8m0_FLOAT8E8M0_to_FLOAT16",
        "test_castlike_FLOAT_to_FLOAT16_expanded",
        "test_castlike_FLOAT_to_DOUBLE_expanded",
        "test_castlike_FLOAT16_to_FLOAT_expanded",
        "test_castlike_FLOAT16_to_DOUBLE_expanded",
        "test_castlike_DOUBLE_to_FLOAT_expanded",
        "test_castlike_DOUBLE_to_FLOAT16_expanded",
        "test_castlike_FLOAT_to_BFLOAT16_expanded",
        "test_castlike_BFLOAT16_to_FLOAT_expanded",
        "test_castlike_FLOAT_to_FLOAT8E4M3FN_expanded",
        "test_castlike_FLOAT16_to_FLOAT8E4M3FN_expanded",
        "test_castlike_FLOAT_to_FLOAT8E4M3FNUZ_expanded",
        "test_castlike_FLOAT16_to_FLOAT8E4M3FNUZ_expanded",
        "test_castlike_FLOAT8E4M3FN_to_FLOAT_expanded",
        "test_castlike_FLOAT8E4M3FN_to_FLOAT16_expanded",
        "test_castlike_FLOAT8E4M3FNUZ_to_FLOAT_expanded",
        "test_castlike_FLOAT8E4M3FNUZ_to_FLOAT16_expanded",
        "test_castlike_FLOAT_to_FLOAT8E5M2_expanded",
        "test_castlike_FLOAT16_to_FLOAT8E5M2_expanded",
        "test_castlike_FLOAT_to_FLOAT8E5M2FNUZ_expanded",
        "test_castlike_FLOAT16_to_FLOAT8E5M2FNUZ_expanded",
        "test_castlike_FLOAT8E5M2_to_FLOAT_expanded",
        "test_castlike_FLOAT8E5M2_to_FLOAT16_expanded",
        "test_castlike_FLOAT8E5M2FNUZ_to_FLOAT_expanded",
        "test_castlike_FLOAT8E5M2FNUZ_to_FLOAT16_expanded",
        "test_castlike_FLOAT_to_UINT4_expanded",
        "test_castlike_FLOAT16_to_UINT4_expanded",
        "test_castlike_FLOAT_to_INT4_expanded",
        "test_castlike_FLOAT16_to_INT4_expanded",
        "test_castlike_UINT4_to_FLOAT_expanded",
        "test_castlike_UINT4_to_FLOAT16_expanded",
        "test_castlike_UINT4_to_UINT8_expanded",
        "test_castlike_INT4_to_FLOAT_expanded",
        "test_castlike_INT4_to_FLOAT16_expanded",
        "test_castlike_INT4_to_INT8_expanded",
        "test_castlike_FLOAT4E2M1_to_FLOAT_expanded",
        "test_castlike_FLOAT4E2M1_to_FLOAT16_expanded",
        "test_castlike_FLOAT_to_FLOAT4E2M1_expanded",
        "test_castlike_FLOAT16_to_FLOAT4E2M1_expanded",
        "test_castlike_FLOAT_to_UINT2_expanded",
        "test_castlike_FLOAT16_to_UINT2_expanded",
        "test_castlike_FLOAT_to_INT2_expanded",
        "test_castlike_FLOAT16_to_INT2_expanded",
        "test_castlike_UINT2_to_FLOAT_expanded",
        "test_castlike_UINT2_to_FLOAT16_expanded",
        "test_castlike_UINT2_to_UINT8_expanded",
        "test_castlike_INT2_to_FLOAT_expanded",
        "test_castlike_INT2_to_FLOAT16_expanded",
        "test_castlike_INT2_to_INT8_expanded",
        "test_castlike_no_saturate_FLOAT_to_FLOAT8E4M3FN_expanded",
        "test_castlike_no_saturate_FLOAT_to_FLOAT8E4M3FNUZ_expanded",
        "test_castlike_no_saturate_FLOAT_to_FLOAT8E5M2_expanded",
        "test_castlike_no_saturate_FLOAT_to_FLOAT8E5M2FNUZ_expanded",
        "test_castlike_no_saturate_FLOAT16_to_FLOAT8E4M3FN_expanded",
        "test_castlike_no_saturate_FLOAT16_to_FLOAT8E4M3FNUZ_expanded",
        "test_castlike_no_saturate_FLOAT16_to_FLOAT8E5M2_expanded",
        "test_castlike_no_saturate_FLOAT16_to_FLOAT8E5M2FNUZ_expanded",
    ],
    DROPOUT_MASK: [
        "test_dropout_default_mask",
        "test_dropout_default_mask_ratio",
    ],
    TRAINING_MODE: [
        "test_training_dropout_default",
        "test_training_dropout_default_mask",
        "test_training_dropout",
        "test_training_dropout_mask",
        "test_training_dropout_zero_ratio",
        "test_training_dropout_zero_ratio_mask",
        "test_batchnorm_example_training_mode",
        "test_batchnorm_epsilon_training_mode",
    ],
    SEQUENCE_OPTIONAL: [
        "test_identity_sequence",
        "test_identity_opt",
    ],
    MAXPOOL_INDICES: [
        "test_maxpool_with_argmax_2d_precomputed_pads",
        "test_maxpool_with_argmax_2d_precomputed_strides",
    ],
    OTHER_FLOATS: [
        "test_max_float16",
        "test_max_float64",
        "test_min_float16",
        "test_min_float64",
    ],
    PAD_MODE: [
        "test_edge_pad",
        "test_reflect_pad",
        "test_wrap_pad",
    ],
}

# name -> reason; every one must be refused with ModelImportError.
SKIPPED: dict[str, str] = {name: reason for reason, names in _GROUPS.items() for name in names}

# reason -> what the ModelImportError message must say (a regular expression).
REFUSAL_MESSAGE: dict[str, str] = {
    INTEGER_DATA: r"element type U?INT(8|16|32|64)\b",
    CAST_NON_FLOAT32: r"element type (FLOAT16|DOUBLE|BFLOAT16|FLOAT8\w+|FLOAT4E2M1|U?INT[248])\b",
    DROPOUT_MASK: r"element type BOOL",
    TRAINING_MODE: r"training mode|element type BOOL",
    SEQUENCE_OPTIONAL: r"only float32 model inputs",
    MAXPOOL_INDICES: r"element type INT64|Indices",
    PAD_MODE: r"element type INT32|mode",
    OTHER_FLOATS: r"element type (FLOAT16|DOUBLE)\b",
}

# -- run after turning parameter inputs into initializers -----------------------------------------------

# These cases feed a parameter that real models carry as a constant (Reshape's shape, Squeeze/Unsqueeze/
# ReduceMean axes, Pad's pads/value/axes, an integer Pow exponent) through an int64/int32/uint graph
# input. As given they must be refused (a run-time integer input); with those inputs turned into
# initializers holding the test data they must pass.
FROZEN_PARAMETERS = "parameter input given as a run-time integer graph input; run with it as an initializer"
FROZEN: dict[str, str] = {name: FROZEN_PARAMETERS for name in [
    "test_constant_pad",
    "test_constant_pad_axes",
    "test_constant_pad_negative_axes",
    "test_pow_types_float32_int64",
    "test_pow_types_float32_int32",
    "test_pow_types_float32_uint64",
    "test_pow_types_float32_uint32",
    "test_reduce_mean_do_not_keepdims_example",
    "test_reduce_mean_do_not_keepdims_random",
    "test_reduce_mean_keepdims_example",
    "test_reduce_mean_keepdims_random",
    "test_reduce_mean_default_axes_keepdims_example",
    "test_reduce_mean_default_axes_keepdims_random",
    "test_reduce_mean_negative_axes_keepdims_example",
    "test_reduce_mean_negative_axes_keepdims_random",
    "test_reshape_reordered_all_dims",
    "test_reshape_reordered_last_dims",
    "test_reshape_reduced_dims",
    "test_reshape_extended_dims",
    "test_reshape_one_dim",
    "test_reshape_negative_dim",
    "test_reshape_negative_extended_dims",
    "test_reshape_zero_dim",
    "test_reshape_zero_and_negative_dim",
    "test_reshape_allowzero_reordered",
    "test_squeeze",
    "test_squeeze_negative_axes",
    "test_unsqueeze_axis_0",
    "test_unsqueeze_axis_1",
    "test_unsqueeze_axis_2",
    "test_unsqueeze_two_axes",
    "test_unsqueeze_three_axes",
    "test_unsqueeze_unsorted_axes",
    "test_unsqueeze_negative_axes",
]}

# -- expected data recomputed with the ONNX reference implementation ----------------------------------

# name -> reason: the published expected output is a hand-written literal that is off in the 4th decimal,
# so the expected output is recomputed with onnx.reference.ReferenceEvaluator (the ONNX authors' own
# reference implementation) and compared with the usual rtol 1e-4 / atol 1e-5.
RECOMPUTED: dict[str, str] = {
    "test_averagepool_2d_ceil_last_window_starts_on_pad": (
        "literal expected output rounded by hand: 0.2841 for (0.8816+0.4353+0.5772+0.6623)/9 = 0.284044"),
}

# -- known failures -------------------------------------------------------------------------------------

# name -> reason. Empty: every float32 case of a supported operator passes.
XFAIL: dict[str, str] = {}

# -- operators without a runnable node test case --------------------------------------------------------

# op type -> where it is tested instead.
NO_NODE_CASE: dict[str, str] = {
    "Cast": "every Cast node case involves a non-float32 type; float32->float32 Cast is in test_op_attributes.py",
}

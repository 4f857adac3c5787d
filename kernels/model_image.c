/* model_image.c: the layers of the graph executor that act on images and shapes
 * (conv2d, maxpool2d, avgpool2d, flatten, reshape), layernorm and the elementwise
 * functions, each one op on the backend's stream; model_infer.c's layer loop calls it. */
#include "model_internal.h"
#include "ops.h"

/* x's [C, H, W] (the dims after the batch dim, if any). */
static void image_dims(const model *m, const model_value *v, size_t chw[3]) {
    const uint32_t lead = m->max_batch > 0 ? 1 : 0;
    for (uint32_t d = 0; d < 3; d++) {
        chw[d] = (size_t)v->desc.dims[lead + d];
    }
}

static kernels_activation elementwise(model_config_op op) {
    switch (op) {
    case MODEL_CONFIG_OP_GELU:
        return KERNELS_ACTIVATION_GELU;
    case MODEL_CONFIG_OP_TANH:
        return KERNELS_ACTIVATION_TANH;
    case MODEL_CONFIG_OP_SIGMOID:
        return KERNELS_ACTIVATION_SIGMOID;
    default:
        break;
    }
    return KERNELS_ACTIVATION_NONE;
}

ps_status model_image_run(const model *m, const model_workspace *ws, const float *x, size_t l,
                          size_t batch, float *y) {
    const model_config_layer *layer = &m->layers[l];
    const model_value *xv = &m->values[layer->inputs[0]];
    const model_config_window *w = &layer->window;
    kernels_stream *s = ws->stream;
    size_t chw[3] = {0, 0, 0};
    switch (layer->op) {
    case MODEL_CONFIG_OP_CONV2D: {
        image_dims(m, xv, chw);
        const kernels_conv2d_shape shape = {
            .batch = batch,
            .in_channels = chw[0],
            .in_h = chw[1],
            .in_w = chw[2],
            .out_channels = w->out_channels,
            .kernel_h = w->kernel[0],
            .kernel_w = w->kernel[1],
            .stride_h = w->stride[0],
            .stride_w = w->stride[1],
            .pad_h = w->padding[0],
            .pad_w = w->padding[1],
            .dilation_h = w->dilation[0],
            .dilation_w = w->dilation[1],
            .groups = w->groups,
        };
        return kernels_op_conv2d(s, &shape, x, model_param_ptr(m, layer->weight),
                                 layer->bias != MODEL_CONFIG_NONE ? model_param_ptr(m, layer->bias)
                                                                  : NULL,
                                 model_activation_to_backend(layer->activation), y);
    }
    case MODEL_CONFIG_OP_MAXPOOL2D:
    case MODEL_CONFIG_OP_AVGPOOL2D: {
        image_dims(m, xv, chw);
        const kernels_pool2d_shape shape = {
            .batch = batch,
            .channels = chw[0],
            .in_h = chw[1],
            .in_w = chw[2],
            .kernel_h = w->kernel[0],
            .kernel_w = w->kernel[1],
            .stride_h = w->stride[0],
            .stride_w = w->stride[1],
            .pad_h = w->padding[0],
            .pad_w = w->padding[1],
        };
        kernels_pool2d_kind kind = KERNELS_POOL2D_MAX;
        if (layer->op == MODEL_CONFIG_OP_AVGPOOL2D) {
            kind = w->count_include_pad ? KERNELS_POOL2D_AVG : KERNELS_POOL2D_AVG_EXCLUDE_PAD;
        }
        return kernels_op_pool2d(s, &shape, kind, x, y);
    }
    case MODEL_CONFIG_OP_FLATTEN:
    case MODEL_CONFIG_OP_RESHAPE: {
        const size_t n = batch * xv->per_sample; /* the same count in and out (the plan) */
        return kernels_op_reshape(s, x, &n, 1, &n, 1, y);
    }
    case MODEL_CONFIG_OP_LAYERNORM:
        return kernels_op_layernorm(
            s, x, batch * xv->rows, xv->cols,
            layer->weight != MODEL_CONFIG_NONE ? model_param_ptr(m, layer->weight) : NULL,
            layer->bias != MODEL_CONFIG_NONE ? model_param_ptr(m, layer->bias) : NULL, layer->eps,
            y);
    case MODEL_CONFIG_OP_GELU:
    case MODEL_CONFIG_OP_TANH:
    case MODEL_CONFIG_OP_SIGMOID:
        return kernels_op_activation(s, elementwise(layer->op), x, batch * xv->per_sample, y);
    default:
        break;
    }
    return PS_STATUS_INTERNAL;
}

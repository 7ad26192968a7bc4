// Request and response schemas of the model registry, predictions, evaluations and checkpoint downloads
// (allow-lists, as every response schema is).
import { Type } from '@fastify/type-provider-typebox'
import { DEFAULT_TOP_K, MAX_INPUTS } from '../../inference/inputs.js'
import { AnyObject, ListQuery, Nullable, StringEnum } from '../../schemas/common.js'

const Unix = Type.Integer({ description: 'Unix seconds' })

export const ModelListQuery = Type.Object(
  {
    ...ListQuery.properties,
    kind: Type.Optional(StringEnum(['builtin', 'uploaded', 'fine_tuned', 'architecture'])),
    base_model: Type.Optional(Type.String({ maxLength: 200, description: 'Only models fine-tuned from this model.' })),
    job: Type.Optional(Type.String({ maxLength: 100, description: 'Only the model this fine-tuning job made.' })),
  },
  { additionalProperties: false },
)

/** `GET /v1/models/{id}/content` (and the admin twin): which format the zip holds. */
export const ModelDownloadQuery = Type.Object(
  {
    format: Type.Optional(
      StringEnum(['tfjs_layers', 'saved_model'], {
        description:
          '`tfjs_layers` (default): the stored TF.js files, model.json + weights.bin + metadata.json: a layers model for `tf.loadLayersModel`, or, for an uploaded TF.js graph model and a model fine-tuned on one (base graph + trained head as graph nodes), a graph model for `tf.loadGraphModel`. `saved_model`: the whole model compiled into a frozen TensorFlow SavedModel (saved_model.pb with a `serving_default` signature, weights as constants, an empty variables/) + metadata.json (classes, preprocessing, and a `saved_model` block naming the signature input and output); 409 `model_not_freezable` when a layer has no TensorFlow graph translation.',
      }),
    ),
  },
  { additionalProperties: false },
)

export const LineageObject = Type.Object(
  {
    object: Type.Literal('model.lineage'),
    model: Type.String(),
    chain: Type.Array(
      Type.Object({
        id: Type.String(),
        kind: Type.String(),
        base_model: Nullable(Type.String()),
        fine_tuning_job: Nullable(Type.String()),
        deleted: Type.Boolean(),
      }),
      { description: 'The model first, then its base, its base’s base, … up to a built-in or uploaded root.' },
    ),
    teacher: Nullable(
      Type.String({ description: 'the teacher a distilled model learned from; null for other methods' }),
    ),
    job: Nullable(
      Type.Object({
        id: Type.String(),
        status: Type.String(),
        method: AnyObject,
        hyperparameters: AnyObject,
        seed: Type.Integer(),
        backend: Nullable(Type.String()),
        validation_file: Nullable(Type.String()),
        created_at: Unix,
        finished_at: Nullable(Unix),
      }),
    ),
    training_file: Nullable(
      Type.Object({
        id: Type.String(),
        filename: Type.String(),
        format: Nullable(Type.String()),
        bytes: Type.Integer(),
        sha256: Type.String(),
        rows: Nullable(Type.Integer()),
        classes: Nullable(Type.Array(Type.String())),
        deleted: Type.Boolean(),
      }),
    ),
    checkpoints: Type.Array(
      Type.Object({
        id: Type.String(),
        epoch: Type.Integer(),
        step: Type.Integer(),
        metrics: AnyObject,
        created_at: Unix,
      }),
    ),
  },
  { $id: 'ModelLineage' },
)

const JsonInput = Type.Union([
  Type.Object(
    { image: Type.String({ description: 'base64 PNG or JPEG (a `data:image/...;base64,` prefix is accepted)' }) },
    { additionalProperties: false },
  ),
  Type.Object(
    { features: Type.Array(Type.Number(), { description: 'one row: as many numbers as the model input has' }) },
    { additionalProperties: false },
  ),
])

export const PredictionsJsonBody = Type.Object(
  {
    inputs: Type.Array(JsonInput, { minItems: 1, maxItems: MAX_INPUTS }),
    top_k: Type.Optional(
      Type.Integer({
        minimum: 1,
        description: `classes returned per input, most probable first (1 to the model's class count; default ${DEFAULT_TOP_K} or fewer)`,
      }),
    ),
  },
  {
    additionalProperties: false,
    examples: [{ inputs: [{ features: [5.1, 3.5, 1.4, 0.2] }], top_k: 2 }, { inputs: [{ image: 'iVBORw0KGgo…' }] }],
  },
)

export const PredictionsMultipartBody = Type.Object({
  image: Type.Array(Type.String({ format: 'binary' }), {
    minItems: 1,
    maxItems: MAX_INPUTS,
    description: 'one file part per image (PNG or JPEG), repeated',
  }),
  top_k: Type.Optional(Type.String({ description: 'integer, as in the JSON body' })),
})

export const PredictionList = Type.Object(
  {
    object: Type.Literal('list'),
    data: Type.Array(
      Type.Object({
        index: Type.Integer({ description: 'position of the input in the request' }),
        predictions: Type.Array(Type.Object({ class: Type.String(), probability: Type.Number() })),
      }),
    ),
    model: Type.String(),
    backend: Type.String({ description: 'TensorFlow.js backend that computed the predictions' }),
    forward: Type.Union([Type.Literal('graph'), Type.Literal('eager')], {
      description:
        'how the model ran: `graph` = compiled whole into a frozen TensorFlow graph (tensorflow backend), `eager` = its layers op by op (other backends, REFIT_FROZEN_GRAPH=off, a layer the graph compiler does not translate, or a compile that would outgrow INFERENCE_MEMORY_BYTES)',
    }),
  },
  {
    $id: 'PredictionList',
    examples: [
      {
        object: 'list',
        data: [
          {
            index: 0,
            predictions: [
              { class: '7', probability: 0.991 },
              { class: '9', probability: 0.006 },
            ],
          },
        ],
        model: 'ft:mnist-cnn:digits:abc12345',
        backend: 'tensorflow',
        forward: 'graph',
      },
    ],
  },
)

export const EvaluationObject = Type.Object(
  {
    id: Type.String({ examples: ['eval-0a1b2c3d4e5f6g7h8i9j0k1l'] }),
    object: Type.Literal('model.evaluation'),
    model: Type.String(),
    file: Type.String(),
    status: StringEnum(['queued', 'running', 'succeeded', 'failed']),
    created_at: Unix,
    finished_at: Nullable(Unix),
    backend: Nullable(Type.String()),
    result: Nullable(
      Type.Object({
        loss: Type.Number(),
        accuracy: Type.Number(),
        samples: Type.Integer(),
        classes: Type.Array(Type.String()),
        per_class: Type.Array(
          Type.Object({
            class: Type.String(),
            precision: Type.Number(),
            recall: Type.Number(),
            support: Type.Integer(),
          }),
        ),
        confusion_matrix: Type.Array(Type.Array(Type.Integer()), {
          description: 'confusion_matrix[i][j]: samples of class i predicted as class j',
        }),
        misclassified: Type.Optional(
          Type.Array(
            Type.Object({
              index: Type.Integer({ description: "the sample's index in the file (see the admin samples route)" }),
              true: Type.String(),
              predicted: Type.String(),
              probability: Type.Number({ description: 'probability of the predicted class' }),
            }),
            { maxItems: 50, description: 'Up to 50 misclassified samples, most confidently wrong first.' },
          ),
        ),
      }),
    ),
    error: Nullable(Type.Object({ code: Type.String(), message: Type.String() })),
  },
  { $id: 'ModelEvaluation' },
)

export const CreateEvaluationBody = Type.Object(
  { file: Type.String({ minLength: 1, maxLength: 100, description: 'A processed, labelled file of the project' }) },
  { additionalProperties: false, examples: [{ file: 'file-0a1b2c3d4e5f6g7h8i9j0k1l' }] },
)

export const ModelEvalParams = Type.Object(
  { id: Type.String({ maxLength: 200 }), eval_id: Type.String({ maxLength: 100 }) },
  { additionalProperties: false },
)

export const CheckpointParams = Type.Object(
  { id: Type.String({ maxLength: 100 }), checkpoint_id: Type.String({ maxLength: 100 }) },
  { additionalProperties: false },
)

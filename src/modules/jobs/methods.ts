// The three training methods as the API accepts them, checked against the models they name, and
// normalized into what is stored on the job and sent to the training process.
import type { Db } from '../../db/client.js'
import { AppError, notFound } from '../../errors.js'
import type { File, Model } from '../../generated/prisma/client.js'
import type { HyperparametersInput, MethodInput } from '../../schemas/jobs.js'
import { getModel } from '../models/models-service.js'
import { type Auto, roundRate } from './hyperparameters.js'

export type MethodType = 'transfer' | 'supervised' | 'distillation'

export type { MethodInput }

/** What the job row keeps in `method` (config without hyperparameters, every "auto" resolved). */
export type StoredMethod =
  | {
      type: 'transfer'
      transfer: {
        head: { hidden_units: number; dropout: number }
        unfreeze_top_blocks: number
        fine_tune: { n_epochs: number; learning_rate: number } | null
      }
    }
  | { type: 'supervised'; supervised: Record<string, never> }
  | { type: 'distillation'; distillation: { teacher_model: string; temperature: number; alpha: number } }

const auto = <T>(v: Auto<T> | undefined, d: T): T => (v === undefined || v === 'auto' ? d : v)

export function methodHyperparameters(method: MethodInput): HyperparametersInput {
  const t = method.type as MethodType
  return (method[t] as { hyperparameters?: HyperparametersInput } | undefined)?.hyperparameters ?? {}
}

/**
 * Checks the method against the model it trains and returns what to store. transfer: `model` must have
 * a feature layer (an architecture preset has nothing pretrained to transfer); distillation: the teacher
 * must exist in the project (or be built-in) and be a trained model, not a preset.
 */
export async function normalizeMethod(
  db: Db,
  projectId: string,
  method: MethodInput,
  model: Model,
  learningRate: number,
): Promise<{ stored: StoredMethod; teacher: Model | null }> {
  for (const other of ['transfer', 'supervised', 'distillation'] as const)
    if (other !== method.type && method[other] !== undefined)
      throw new AppError('invalid_request', `method.${other} was given but method.type is "${method.type}".`, {
        param: `method.${other}`,
      })
  if (method.type === 'distillation' && !method.distillation?.teacher_model)
    throw new AppError('invalid_request', 'A distillation job needs method.distillation.teacher_model.', {
      param: 'method.distillation.teacher_model',
    })
  const meta = model.metadata as { feature_layer?: string | null; blocks?: { name: string }[]; graph_model?: unknown }
  // a TF.js graph model has no trainable layers here: it is a frozen backbone for a new head, nothing more
  if (meta.graph_model && method.type !== 'transfer')
    throw new AppError(
      'model_not_trainable',
      `${model.id} is a TF.js graph model: it can only be a frozen backbone; use method "transfer".`,
      { param: 'model' },
    )
  if (meta.graph_model && (method.transfer?.unfreeze_top_blocks ?? 0) > 0)
    throw new AppError(
      'model_not_trainable',
      `${model.id} is a TF.js graph model, whose layers cannot be trained: only a new head trains; send unfreeze_top_blocks 0.`,
      { param: 'method.transfer.unfreeze_top_blocks' },
    )
  if (method.type === 'transfer') {
    if (model.kind === 'architecture' || !meta.feature_layer)
      throw new AppError(
        'model_not_trainable',
        `${model.id} has no pretrained feature layer to transfer from; use method "supervised" to train it.`,
        { param: 'model' },
      )
    const cfg = method.transfer ?? {}
    const blocks = meta.blocks?.length ?? 0
    const unfreeze = cfg.unfreeze_top_blocks ?? 0
    if (unfreeze > blocks)
      throw new AppError(
        'invalid_hyperparameter',
        `${model.id} has ${blocks} blocks; unfreeze_top_blocks is ${unfreeze}.`,
        {
          param: 'method.transfer.unfreeze_top_blocks',
        },
      )
    const fine = cfg.fine_tune
    if (fine && unfreeze === 0)
      throw new AppError(
        'invalid_hyperparameter',
        'fine_tune needs unfreeze_top_blocks >= 1: nothing would be fine-tuned.',
        {
          param: 'method.transfer.fine_tune',
        },
      )
    return {
      teacher: null,
      stored: {
        type: 'transfer',
        transfer: {
          head: { hidden_units: auto(cfg.head?.hidden_units, 128), dropout: auto(cfg.head?.dropout, 0.5) },
          unfreeze_top_blocks: unfreeze,
          fine_tune: fine
            ? {
                n_epochs: auto(fine.n_epochs, 3),
                learning_rate: auto(fine.learning_rate, roundRate(learningRate / 10)),
              }
            : null,
        },
      },
    }
  }
  if (method.type === 'supervised') return { teacher: null, stored: { type: 'supervised', supervised: {} } }
  if (method.type === 'distillation') {
    const cfg = method.distillation!
    const teacher = await getModel(db, projectId, cfg.teacher_model).catch((err) => {
      if (err instanceof AppError && err.code === 'not_found')
        throw notFound('model', cfg.teacher_model, 'method.distillation.teacher_model')
      throw err
    })
    // a TF.js graph model teaches through its converted graph when its output is class probabilities: the soft
    // targets are softmax(log(p) / T), exact for a softmax output and meaningless for logits or embeddings
    const graph = (teacher.metadata as { graph_model?: { output_op?: string | null } }).graph_model
    if (graph && graph.output_op !== 'Softmax')
      throw new AppError(
        'model_not_trainable',
        `${teacher.id} is a TF.js graph model whose output is ${graph.output_op ? `a ${graph.output_op}` : 'of an unrecorded op'}, not class probabilities (a Softmax): it cannot teach (use it as a transfer backbone, or fine-tune one on it and let that teach).`,
        { param: 'method.distillation.teacher_model' },
      )
    if (graph && !(teacher.metadata as { classes?: string[] | null }).classes?.length)
      throw new AppError(
        'model_not_trainable',
        `${teacher.id} is a TF.js graph model without class names: upload it with \`classes\` to let it teach.`,
        { param: 'method.distillation.teacher_model' },
      )
    if (teacher.kind === 'architecture')
      throw new AppError('model_not_trainable', `${teacher.id} is an untrained architecture and cannot teach.`, {
        param: 'method.distillation.teacher_model',
      })
    return {
      teacher,
      stored: {
        type: 'distillation',
        distillation: {
          teacher_model: teacher.id,
          temperature: auto(cfg.temperature, 4),
          alpha: auto(cfg.alpha, 0.7),
        },
      },
    }
  }
  throw new AppError(
    'unsupported_method',
    `method.type must be transfer, supervised or distillation, got "${method.type}".`,
    {
      param: 'method.type',
    },
  )
}

/** A teacher must predict exactly the training file's classes, in any order the engine can align. */
export function checkTeacher(teacher: Model, file: File) {
  const classes = (teacher.metadata as { classes?: string[] | null }).classes
  const fileClasses = (file.stats as { classes?: string[] } | null)?.classes
  if (!classes || !fileClasses) return
  const a = [...classes].sort().join('\u0000')
  const b = [...fileClasses].sort().join('\u0000')
  if (a !== b)
    throw new AppError(
      'teacher_classes_mismatch',
      `Teacher ${teacher.id} predicts [${classes.join(', ')}] but ${file.id} has classes [${fileClasses.join(', ')}].`,
      { param: 'method.distillation.teacher_model' },
    )
}

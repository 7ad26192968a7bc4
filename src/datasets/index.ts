// The datasets module's public API: detect, validate and load training files.
export { sortClasses } from './classes.js'
export { detectFormat } from './detect-format.js'
export { type DatasetErrorCode, DatasetValidationError, MAX_PROBLEMS } from './errors.js'
export { decodeImageNative, decodeImageToShape, type ImageShape, type RawImage } from './image.js'
export { type DatasetLimits, DEFAULT_DATASET_LIMITS } from './limits.js'
export { type LoadOptions, loadDataset } from './load.js'
export type { DatasetFormat, DatasetOptions, DatasetProblem, DatasetStats, LoadedDataset } from './types.js'
export { assertFormat, type ValidateOptions, validateDataset } from './validate.js'

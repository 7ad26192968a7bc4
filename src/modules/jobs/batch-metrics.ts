// Batch metric rows: the training process reports the loss and accuracy of one batch every few steps, and
// the worker stores them as metric rows under their own names. Epoch rows keep theirs (loss, accuracy,
// val_loss, val_accuracy), so whatever summarises epochs (metrics.final and best, the models list) must
// leave batch rows out.

/** Names of the per-batch metric rows, in the order the worker writes them. */
export const BATCH_METRICS = ['batch_loss', 'batch_accuracy'] as const

/** A Prisma `where` fragment that keeps epoch rows only. */
export const EPOCH_ROWS_ONLY = { name: { notIn: [...BATCH_METRICS] } }

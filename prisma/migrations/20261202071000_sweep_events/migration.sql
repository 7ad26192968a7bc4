-- AlterTable
ALTER TABLE "sweeps" ADD COLUMN     "settled_at" TIMESTAMP(3);

-- CreateTable
CREATE TABLE "sweep_events" (
    "id" TEXT NOT NULL,
    "seq" BIGSERIAL NOT NULL,
    "sweep_id" TEXT NOT NULL,
    "key" TEXT NOT NULL,
    "type" TEXT NOT NULL,
    "level" TEXT NOT NULL,
    "message" TEXT NOT NULL,
    "data" JSONB,
    "created_at" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "sweep_events_pkey" PRIMARY KEY ("id")
);

-- CreateIndex
CREATE UNIQUE INDEX "sweep_events_seq_key" ON "sweep_events"("seq");

-- CreateIndex
CREATE INDEX "sweep_events_sweep_id_seq_idx" ON "sweep_events"("sweep_id", "seq");

-- CreateIndex
CREATE UNIQUE INDEX "sweep_events_sweep_id_key_key" ON "sweep_events"("sweep_id", "key");

-- AddForeignKey
ALTER TABLE "sweep_events" ADD CONSTRAINT "sweep_events_sweep_id_fkey" FOREIGN KEY ("sweep_id") REFERENCES "sweeps"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- Sweeps that ended before this migration: settled as they are (their streams end at once)
UPDATE "sweeps" SET "settled_at" = "finished_at" WHERE "status" <> 'running';

-- CreateEnum
CREATE TYPE "SweepStatus" AS ENUM ('running', 'succeeded', 'failed', 'cancelled');

-- AlterTable
ALTER TABLE "fine_tuning_jobs" ADD COLUMN     "sweep_id" TEXT,
ADD COLUMN     "sweep_trial" INTEGER,
ADD COLUMN     "sweep_values" JSONB;

-- CreateTable
CREATE TABLE "sweeps" (
    "id" TEXT NOT NULL,
    "project_id" TEXT NOT NULL,
    "spec" JSONB NOT NULL,
    "plan" JSONB NOT NULL,
    "status" "SweepStatus" NOT NULL DEFAULT 'running',
    "status_reason" TEXT,
    "best_job_id" TEXT,
    "created_at" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updated_at" TIMESTAMP(3) NOT NULL,
    "finished_at" TIMESTAMP(3),

    CONSTRAINT "sweeps_pkey" PRIMARY KEY ("id")
);

-- CreateIndex
CREATE INDEX "sweeps_project_id_created_at_idx" ON "sweeps"("project_id", "created_at");

-- CreateIndex
CREATE INDEX "sweeps_status_idx" ON "sweeps"("status");

-- CreateIndex
CREATE UNIQUE INDEX "fine_tuning_jobs_sweep_id_sweep_trial_key" ON "fine_tuning_jobs"("sweep_id", "sweep_trial");

-- AddForeignKey
ALTER TABLE "fine_tuning_jobs" ADD CONSTRAINT "fine_tuning_jobs_sweep_id_fkey" FOREIGN KEY ("sweep_id") REFERENCES "sweeps"("id") ON DELETE SET NULL ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "sweeps" ADD CONSTRAINT "sweeps_project_id_fkey" FOREIGN KEY ("project_id") REFERENCES "projects"("id") ON DELETE CASCADE ON UPDATE CASCADE;

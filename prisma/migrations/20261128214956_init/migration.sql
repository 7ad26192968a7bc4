-- CreateEnum
CREATE TYPE "FileStatus" AS ENUM ('uploaded', 'processed', 'error');

-- CreateEnum
CREATE TYPE "FileFormat" AS ENUM ('csv', 'jsonl', 'image_zip', 'idx');

-- CreateEnum
CREATE TYPE "ModelKind" AS ENUM ('builtin', 'uploaded', 'fine_tuned', 'architecture');

-- CreateEnum
CREATE TYPE "JobStatus" AS ENUM ('validating_files', 'queued', 'running', 'cancelling', 'succeeded', 'failed', 'cancelled');

-- CreateTable
CREATE TABLE "projects" (
    "id" TEXT NOT NULL,
    "name" TEXT NOT NULL,
    "created_at" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updated_at" TIMESTAMP(3) NOT NULL,

    CONSTRAINT "projects_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "api_keys" (
    "id" TEXT NOT NULL,
    "project_id" TEXT NOT NULL,
    "name" TEXT,
    "prefix" TEXT NOT NULL,
    "secret_hash" TEXT NOT NULL,
    "created_at" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "last_used_at" TIMESTAMP(3),
    "revoked_at" TIMESTAMP(3),

    CONSTRAINT "api_keys_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "files" (
    "id" TEXT NOT NULL,
    "project_id" TEXT NOT NULL,
    "filename" TEXT NOT NULL,
    "purpose" TEXT NOT NULL,
    "format" "FileFormat",
    "label_column" TEXT,
    "bytes" BIGINT NOT NULL,
    "sha256" TEXT NOT NULL,
    "storage_path" TEXT,
    "status" "FileStatus" NOT NULL DEFAULT 'uploaded',
    "status_details" JSONB,
    "stats" JSONB,
    "created_at" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updated_at" TIMESTAMP(3) NOT NULL,
    "deleted_at" TIMESTAMP(3),

    CONSTRAINT "files_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "models" (
    "id" TEXT NOT NULL,
    "project_id" TEXT,
    "kind" "ModelKind" NOT NULL,
    "description" TEXT,
    "base_model_id" TEXT,
    "job_id" TEXT,
    "training_file_id" TEXT,
    "artifact_id" TEXT,
    "metadata" JSONB NOT NULL,
    "created_at" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updated_at" TIMESTAMP(3) NOT NULL,
    "deleted_at" TIMESTAMP(3),

    CONSTRAINT "models_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "fine_tuning_jobs" (
    "id" TEXT NOT NULL,
    "project_id" TEXT NOT NULL,
    "base_model_id" TEXT NOT NULL,
    "training_file_id" TEXT NOT NULL,
    "validation_file_id" TEXT,
    "fine_tuned_model_id" TEXT,
    "method" JSONB NOT NULL,
    "hyperparameters" JSONB NOT NULL,
    "seed" INTEGER NOT NULL,
    "suffix" TEXT,
    "user_metadata" JSONB,
    "status" "JobStatus" NOT NULL DEFAULT 'validating_files',
    "status_reason" TEXT,
    "error_code" TEXT,
    "error_message" TEXT,
    "error_param" TEXT,
    "backend" TEXT,
    "attempt" INTEGER NOT NULL DEFAULT 0,
    "worker_pid" INTEGER,
    "trainer_pid" INTEGER,
    "progress" JSONB,
    "trained_samples" BIGINT,
    "cancel_requested_at" TIMESTAMP(3),
    "created_at" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updated_at" TIMESTAMP(3) NOT NULL,
    "started_at" TIMESTAMP(3),
    "finished_at" TIMESTAMP(3),

    CONSTRAINT "fine_tuning_jobs_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "job_events" (
    "id" TEXT NOT NULL,
    "seq" BIGSERIAL NOT NULL,
    "job_id" TEXT NOT NULL,
    "level" TEXT NOT NULL,
    "type" TEXT NOT NULL,
    "message" TEXT NOT NULL,
    "data" JSONB,
    "created_at" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "job_events_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "metrics" (
    "id" BIGSERIAL NOT NULL,
    "job_id" TEXT NOT NULL,
    "step" INTEGER NOT NULL,
    "epoch" INTEGER NOT NULL,
    "name" TEXT NOT NULL,
    "value" DOUBLE PRECISION NOT NULL,
    "created_at" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "metrics_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "checkpoints" (
    "id" TEXT NOT NULL,
    "job_id" TEXT NOT NULL,
    "epoch" INTEGER NOT NULL,
    "step" INTEGER NOT NULL,
    "metrics" JSONB NOT NULL,
    "artifact_id" TEXT NOT NULL,
    "created_at" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "checkpoints_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "artifacts" (
    "id" TEXT NOT NULL,
    "project_id" TEXT,
    "kind" TEXT NOT NULL,
    "path" TEXT NOT NULL,
    "sha256" TEXT NOT NULL,
    "bytes" BIGINT NOT NULL,
    "created_at" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "artifacts_pkey" PRIMARY KEY ("id")
);

-- CreateIndex
CREATE UNIQUE INDEX "api_keys_prefix_key" ON "api_keys"("prefix");

-- CreateIndex
CREATE INDEX "api_keys_project_id_idx" ON "api_keys"("project_id");

-- CreateIndex
CREATE INDEX "files_project_id_created_at_idx" ON "files"("project_id", "created_at");

-- CreateIndex
CREATE UNIQUE INDEX "models_job_id_key" ON "models"("job_id");

-- CreateIndex
CREATE INDEX "models_project_id_created_at_idx" ON "models"("project_id", "created_at");

-- CreateIndex
CREATE INDEX "models_base_model_id_idx" ON "models"("base_model_id");

-- CreateIndex
CREATE INDEX "models_training_file_id_idx" ON "models"("training_file_id");

-- CreateIndex
CREATE INDEX "models_artifact_id_idx" ON "models"("artifact_id");

-- CreateIndex
CREATE INDEX "fine_tuning_jobs_project_id_created_at_idx" ON "fine_tuning_jobs"("project_id", "created_at");

-- CreateIndex
CREATE INDEX "fine_tuning_jobs_training_file_id_idx" ON "fine_tuning_jobs"("training_file_id");

-- CreateIndex
CREATE INDEX "fine_tuning_jobs_validation_file_id_idx" ON "fine_tuning_jobs"("validation_file_id");

-- CreateIndex
CREATE INDEX "fine_tuning_jobs_status_idx" ON "fine_tuning_jobs"("status");

-- CreateIndex
CREATE UNIQUE INDEX "job_events_seq_key" ON "job_events"("seq");

-- CreateIndex
CREATE INDEX "job_events_job_id_seq_idx" ON "job_events"("job_id", "seq");

-- CreateIndex
CREATE UNIQUE INDEX "metrics_job_id_step_name_key" ON "metrics"("job_id", "step", "name");

-- CreateIndex
CREATE INDEX "checkpoints_artifact_id_idx" ON "checkpoints"("artifact_id");

-- CreateIndex
CREATE UNIQUE INDEX "checkpoints_job_id_step_key" ON "checkpoints"("job_id", "step");

-- CreateIndex
CREATE INDEX "artifacts_project_id_idx" ON "artifacts"("project_id");

-- AddForeignKey
ALTER TABLE "api_keys" ADD CONSTRAINT "api_keys_project_id_fkey" FOREIGN KEY ("project_id") REFERENCES "projects"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "files" ADD CONSTRAINT "files_project_id_fkey" FOREIGN KEY ("project_id") REFERENCES "projects"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "models" ADD CONSTRAINT "models_project_id_fkey" FOREIGN KEY ("project_id") REFERENCES "projects"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "models" ADD CONSTRAINT "models_base_model_id_fkey" FOREIGN KEY ("base_model_id") REFERENCES "models"("id") ON DELETE SET NULL ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "models" ADD CONSTRAINT "models_job_id_fkey" FOREIGN KEY ("job_id") REFERENCES "fine_tuning_jobs"("id") ON DELETE SET NULL ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "models" ADD CONSTRAINT "models_training_file_id_fkey" FOREIGN KEY ("training_file_id") REFERENCES "files"("id") ON DELETE SET NULL ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "models" ADD CONSTRAINT "models_artifact_id_fkey" FOREIGN KEY ("artifact_id") REFERENCES "artifacts"("id") ON DELETE SET NULL ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "fine_tuning_jobs" ADD CONSTRAINT "fine_tuning_jobs_project_id_fkey" FOREIGN KEY ("project_id") REFERENCES "projects"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "fine_tuning_jobs" ADD CONSTRAINT "fine_tuning_jobs_training_file_id_fkey" FOREIGN KEY ("training_file_id") REFERENCES "files"("id") ON DELETE RESTRICT ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "fine_tuning_jobs" ADD CONSTRAINT "fine_tuning_jobs_validation_file_id_fkey" FOREIGN KEY ("validation_file_id") REFERENCES "files"("id") ON DELETE SET NULL ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "job_events" ADD CONSTRAINT "job_events_job_id_fkey" FOREIGN KEY ("job_id") REFERENCES "fine_tuning_jobs"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "metrics" ADD CONSTRAINT "metrics_job_id_fkey" FOREIGN KEY ("job_id") REFERENCES "fine_tuning_jobs"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "checkpoints" ADD CONSTRAINT "checkpoints_job_id_fkey" FOREIGN KEY ("job_id") REFERENCES "fine_tuning_jobs"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "checkpoints" ADD CONSTRAINT "checkpoints_artifact_id_fkey" FOREIGN KEY ("artifact_id") REFERENCES "artifacts"("id") ON DELETE RESTRICT ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "artifacts" ADD CONSTRAINT "artifacts_project_id_fkey" FOREIGN KEY ("project_id") REFERENCES "projects"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- CreateEnum
CREATE TYPE "JobResourceClass" AS ENUM ('auto', 'cpu', 'gpu');

-- AlterTable
ALTER TABLE "fine_tuning_jobs" ADD COLUMN     "resource_class" "JobResourceClass" NOT NULL DEFAULT 'auto';

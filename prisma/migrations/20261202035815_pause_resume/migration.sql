-- AlterEnum
ALTER TYPE "JobStatus" ADD VALUE 'paused';

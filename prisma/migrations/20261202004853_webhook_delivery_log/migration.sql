-- AlterTable
ALTER TABLE "webhook_deliveries" ADD COLUMN     "duration_ms" INTEGER,
ADD COLUMN     "error_class" TEXT;

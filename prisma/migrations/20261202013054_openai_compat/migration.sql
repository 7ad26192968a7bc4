-- AlterTable
ALTER TABLE "files" ADD COLUMN     "expires_at" TIMESTAMP(3);

-- CreateIndex
CREATE INDEX "files_expires_at_idx" ON "files"("expires_at");

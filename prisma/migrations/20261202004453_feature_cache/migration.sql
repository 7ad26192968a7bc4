-- CreateTable
CREATE TABLE "feature_cache_entries" (
    "id" TEXT NOT NULL,
    "project_id" TEXT NOT NULL,
    "file_id" TEXT NOT NULL,
    "file_sha256" TEXT NOT NULL,
    "backbone_sha256" TEXT NOT NULL,
    "preprocessing" TEXT NOT NULL,
    "path" TEXT NOT NULL,
    "sha256" TEXT NOT NULL,
    "bytes" BIGINT NOT NULL,
    "rows" INTEGER NOT NULL,
    "created_at" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "last_used_at" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "feature_cache_entries_pkey" PRIMARY KEY ("id")
);

-- CreateIndex
CREATE INDEX "feature_cache_entries_project_id_idx" ON "feature_cache_entries"("project_id");

-- CreateIndex
CREATE INDEX "feature_cache_entries_last_used_at_idx" ON "feature_cache_entries"("last_used_at");

-- CreateIndex
CREATE UNIQUE INDEX "feature_cache_entries_file_id_file_sha256_backbone_sha256_p_key" ON "feature_cache_entries"("file_id", "file_sha256", "backbone_sha256", "preprocessing");

-- AddForeignKey
ALTER TABLE "feature_cache_entries" ADD CONSTRAINT "feature_cache_entries_project_id_fkey" FOREIGN KEY ("project_id") REFERENCES "projects"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "feature_cache_entries" ADD CONSTRAINT "feature_cache_entries_file_id_fkey" FOREIGN KEY ("file_id") REFERENCES "files"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- CreateTable
CREATE TABLE "quota_reservations" (
    "id" TEXT NOT NULL,
    "project_id" TEXT NOT NULL,
    "bytes" BIGINT NOT NULL,
    "expires_at" TIMESTAMP(3) NOT NULL,
    "created_at" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "quota_reservations_pkey" PRIMARY KEY ("id")
);

-- CreateIndex
CREATE INDEX "quota_reservations_project_id_idx" ON "quota_reservations"("project_id");

-- AddForeignKey
ALTER TABLE "quota_reservations" ADD CONSTRAINT "quota_reservations_project_id_fkey" FOREIGN KEY ("project_id") REFERENCES "projects"("id") ON DELETE CASCADE ON UPDATE CASCADE;

// A COCO results document for what the page shows: one image, a category per prompt, and an
// annotation per visible instance (its RLE as the server sent it, bbox as [x, y, width, height]).

export function cocoDocument(upload, instances) {
  const categories = [...new Set(instances.map((instance) => instance.prompt))].map((name, index) => ({ id: index + 1, name }));
  const categoryOf = new Map(categories.map((category) => [category.name, category.id]));
  return {
    info: { description: "SAM3 Studio export", date_created: new Date().toISOString() },
    images: [{ id: 1, file_name: upload.original_name, width: upload.width, height: upload.height, sha256: upload.sha256 }],
    categories,
    annotations: instances.map((instance, index) => {
      const [x1, y1, x2, y2] = instance.box;
      return {
        id: index + 1,
        image_id: 1,
        category_id: categoryOf.get(instance.prompt),
        segmentation: instance.mask.rle,
        area: instance.mask.area,
        bbox: [x1, y1, x2 - x1, y2 - y1],
        score: instance.score,
        iscrowd: 0,
      };
    }),
  };
}

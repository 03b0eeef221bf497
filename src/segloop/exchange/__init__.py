"""Dataset layouts of other tools, read and written as arrays, `Volume`s and plain metadata.

One module per layout; each is pure format conversion and knows nothing of a project (the glue
with the store lives in `segloop.loop.exchange`):

* `segloop.exchange.nnunet`: nnU-Net v2 raw datasets (``DatasetXXX_Name/imagesTr``, ``labelsTr``,
  ``dataset.json``) and prediction folders.
* `segloop.exchange.coco`: 2D slices of volumes as JPGs with a COCO instance file (seed 000's
  ``dataset_generate``), and COCO results back to 3D label maps.
* `segloop.exchange.abdomenatlas`: ``<case>/ct.nii.gz``, ``original_label.nii.gz``,
  ``pseudo_label.nii.gz``, ``segmentations/<class>.nii.gz`` (seed 002).
* `segloop.exchange.monailabel`: a MONAI Label local datastore (images, ``labels/final``,
  ``labels/original``, ``datastore_v2.json``).
* `segloop.exchange.image_folder`: 2D image folders (PNG / TIFF) with label images beside them.
* `segloop.exchange.values`: mapping label values between a file's convention and the schema.
"""

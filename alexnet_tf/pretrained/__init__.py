"""ImageNet-trained weights from elsewhere, as runs of ours: ``alexnet-tf import-weights``.

* `alexnet_tf.pretrained.caffe_proto`: the fields of Caffe's caffe.proto that are read, as
  protobuf message classes built at run time (no Caffe, no protoc);
* `alexnet_tf.pretrained.caffe`: ``.caffemodel`` nets (current and legacy layouts) and Caffe's
  mean files, as NumPy arrays in Caffe's layout;
* `alexnet_tf.pretrained.npy`: caffe-tensorflow's ``.npy`` dictionary, back in Caffe's layout;
* `alexnet_tf.pretrained.convert`: the `AlexNet` that computes Caffe's net, the checks that a
  file is AlexNet's, and the conversion of its weights and mean;
* `alexnet_tf.pretrained.synsets`: ILSVRC-2012's classes (shipped) or the user's list;
* `alexnet_tf.pretrained.import_weights`: the command: a source in, a run directory out.

Importing this package loads nothing; its modules import TensorFlow (all but ``caffe_proto``).
"""

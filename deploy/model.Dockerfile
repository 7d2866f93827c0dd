# syntax=docker/dockerfile:1.7
# The SavedModels for TensorFlow Serving (the EfficientNet-Lite0 classifier and the BlazeFace face detector),
# delivered by an init container (deploy/k8s/base/tfserving.yaml): it copies both model directories into an
# emptyDir shared with the tensorflow/serving container. Build from the repository root after `make model`:
#   docker build -f deploy/model.Dockerfile -t tagsmith/model:0.1.0 .
FROM busybox:1.37.0
COPY models/efficientnet_lite0 /models/efficientnet_lite0
COPY models/face_detector /models/face_detector
USER 10001:10001
# The target directory is the argument: docker run -v "$PWD/out:/target" tagsmith/model:0.1.0 /target
ENTRYPOINT ["cp", "-R", "/models/efficientnet_lite0", "/models/face_detector"]
CMD ["/target"]

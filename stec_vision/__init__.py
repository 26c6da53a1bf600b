"""Vision S-TEC: action-emitting batched image augmenters (crop + flip as one affine map,
colour jitter, grayscale, blur, solarisation), CIFAR / STL-10 / ImageFolder / manifest
datasets, ResNet encoders, demo images and the ``stec-vision`` CLI."""

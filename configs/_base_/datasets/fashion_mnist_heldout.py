# Fashion-MNIST training images 50,000-54,999, which no config here trains
# on (the Fashion-MNIST configs take the first 10,000, the studies of
# benchmarks/ at most the first 32,768): held-out images for fitting a
# temperature (tools/analysis_tools/calibrate.py). A config that lists this
# file among its bases makes them its validation split with
#
#   val_dataloader = dict(dataset=_base_.heldout_dataset)
heldout_dataset = dict(
    # Replaces the inherited validation dataset as a whole.
    _delete_=True,
    # mmpretrain's k-fold wrapper, unshuffled: fold 10 of 12 of the 60,000
    # training images in file order is images 50,000-54,999.
    type='KFoldDataset',
    num_splits=12,
    fold=10,
    test_mode=True,
    dataset=dict(
        type='FashionMNIST',
        data_root='data/fashion_mnist',
        split='train',
        download=False,
        pipeline=[dict(type='PackInputs')]))

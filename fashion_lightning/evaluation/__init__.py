"""What a trained model's answers are worth: the one inference path (`inference`), calibration,
the out-of-domain score and its verdict, test-time augmentation, accuracy under corruption, and
the pictures of data and results (`plots`)."""

//! Our pneumonia CNN, written with candle: preprocessing, training, evaluation, scoring, Grad-CAM.

"""Non-neural baseline: lexical features into LightGBM, trained per fold."""

"""The 2D fluoroscopy views: the viewer, its measuring tools, the trajectory and calibration
overlays drawn on it, the shots strip. A new 2D overlay or image tool goes here."""

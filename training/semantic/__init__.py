"""The semantic reward (SCR): HPSv2 scores of frames for a prompt, and the KL between score distributions."""
